#!/usr/bin/env bash
# Egress prerequisites: the postfix user (the tests run clients as postfix even before the
# Postfix package is installed), tracefs (for the classic-tracepoint fallback), and the BPF
# object when it is missing (it is committed; tests/egress checks it matches bpf/). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! getent group postfix >/dev/null; then groupadd --system postfix; fi
if ! id postfix >/dev/null 2>&1; then
    useradd --system --gid postfix --no-create-home --home-dir /var/spool/postfix \
        --shell /usr/sbin/nologin postfix
fi
if [ -d /sys/kernel/tracing ] && [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null || \
        echo "20-egress: cannot mount tracefs (classic tracepoint fallback untested)" >&2
fi
if [ ! -f src/mailwarden/egress/smtp_egress.bpf.o ] && command -v clang >/dev/null; then
    make -s -C bpf
fi
