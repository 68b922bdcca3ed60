"""Turn a scenario log into the bundled sample: the same lines, minus what is machine-specific.

Regenerate ``src/mailwarden/data/samples/postfix-sample.log`` with::

    MAILWARDEN_WRITE_SAMPLE=src/mailwarden/data/samples/postfix-sample.log \\
        .venv/bin/pytest tests/e2e/test_spine.py

Only addresses and paths change; every other byte is what Postfix wrote:

* the session's loopback block ``127.77.N.x`` (it depends on which slot the run got) becomes
  documentation space: our Postfix ``.1`` -> ``203.0.113.25`` (TEST-NET-3), the receivers
  ``.10``-``.199`` -> ``198.51.100.x`` (TEST-NET-2), submitting app servers ``.200``-``.249``
  -> ``192.0.2.x`` (TEST-NET-1); a production log shows public addresses in these places;
* the instance directories ``/etc/postfix-mwtestN`` and ``/var/spool/postfix-mwtestN`` become
  Debian's defaults ``/etc/postfix`` and ``/var/spool/postfix``;
* the uid of the harness's own user (a system uid, different on every machine) becomes
  :data:`APP_UID`; ``www-data`` is 33 on every Debian.
"""

from __future__ import annotations

import re

from fixtures.postfix import PostfixInstance
from fixtures.slot import CLIENT_FIRST, FAKE_FIRST, POSTFIX_HOST, Slot

OUR_IP = "203.0.113.25"
APP_UID = 1001


def map_address(host: int) -> str:
    if host == POSTFIX_HOST:
        return OUR_IP
    if FAKE_FIRST <= host < CLIENT_FIRST:
        return f"198.51.100.{host}"
    return f"192.0.2.{host}"


def sanitize(
    text: str, postfix: PostfixInstance, slot: Slot, uids: dict[int, int] | None = None
) -> str:
    prefix = re.escape(slot.address(1).rsplit(".", 1)[0] + ".")
    out = re.sub(prefix + r"(\d{1,3})\b", lambda m: map_address(int(m[1])), text)
    for old, new in (uids or {}).items():
        out = re.sub(rf"(postfix/pickup\[\d+\]: \w+: uid=){old} ", rf"\g<1>{new} ", out)
    out = out.replace(str(postfix.config_dir), "/etc/postfix")
    return out.replace(str(postfix.queue_dir), "/var/spool/postfix")
