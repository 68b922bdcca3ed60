#!/usr/bin/env bash
# Postfix test harness (tests/fixtures/postfix.py): let each test session run its own Postfix
# instance beside the machine's (never touching its queue or config), and create the local
# user the submission tests send as. Idempotent.
#
# * Postfix's set-gid postdrop accepts `sendmail -C <dir>` from a non-root user only when <dir>
#   is listed in alternate_config_directories of the default /etc/postfix/main.cf: register the
#   32 slot directories /etc/postfix-mwtest0..31 (keeping whatever is already listed).
# * The default instance is not started (no systemd here; the package's start is denied).
set -euo pipefail

if ! command -v postconf >/dev/null 2>&1 || [ ! -f /etc/postfix/main.cf ]; then
    echo "10-postfix: postfix not installed; skipping (tests needing it will skip)" >&2
    exit 0
fi

current=$(postconf -c /etc/postfix -h alternate_config_directories | tr ',' ' ')
wanted="$current"
for n in $(seq 0 31); do
    d=/etc/postfix-mwtest$n
    case " $wanted " in *" $d "*) ;; *) wanted="$wanted $d" ;; esac
done
wanted=$(echo $wanted)   # squeeze blanks
if [ "$wanted" != "$(echo $current)" ]; then
    postconf -c /etc/postfix -e "alternate_config_directories = $wanted"
fi

# A local "application" user besides www-data and nobody (tests/fixtures/mail.py TEST_USER).
if ! id mwtest-app >/dev/null 2>&1; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin mwtest-app
fi
