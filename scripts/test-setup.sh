#!/usr/bin/env bash
# Prepare this machine for the test suite: Debian packages, then every scripts/setup.d/*.sh hook
# in name order (build artefacts, system users, mounts). Idempotent; safe to run again.
# Servers (Postfix, DNS, SMTP fakes, PostgreSQL, chromium) are started by the pytest fixtures
# that use them, not here.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "test-setup: not root and no passwordless sudo: skipping system set-up;" \
             "tests that need it will be skipped with the reason" >&2
        exit 0
    fi
fi

mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' scripts/debian-packages.txt | grep -v '^$')
missing=()
for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    echo "test-setup: installing ${missing[*]}" >&2
    # Postfix asks questions on install: answer them ("Local only", no auto-start).
    echo "postfix postfix/main_mailer_type select Local only" | $SUDO debconf-set-selections
    echo "postfix postfix/mailname string mail.example.test" | $SUDO debconf-set-selections
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi

for hook in scripts/setup.d/*.sh; do
    [ -e "$hook" ] || continue
    echo "test-setup: $hook" >&2
    $SUDO bash "$hook"
done
