"""The resolvers built from ``[dns]``: the same meaning for the blocking and the asyncio one,
answering from a real DNS server on loopback; with no nameserver anywhere, 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fixtures.dns import DnsServer
from mailwarden.config import DnsSettings
from mailwarden.dnsutil import async_resolver, resolver


def test_settings_mean_the_same_for_both_resolvers(dns_server: DnsServer) -> None:
    dns_server.add("mw-dnsutil.example", "A", "192.0.2.41")
    dns_server.reload()
    s = DnsSettings(nameservers=[dns_server.address], port=53, timeout=1.5)
    sync, aio = resolver(s), async_resolver(s)
    for r in (sync, aio):
        assert r.nameservers == [dns_server.address]
        assert (r.port, r.timeout, r.lifetime, r.cache) == (53, 1.5, 1.5, None)
    ans = sync.resolve("mw-dnsutil.example", "A", search=False)
    assert [str(rr) for rr in ans] == ["192.0.2.41"]
    ans = asyncio.run(aio.resolve("mw-dnsutil.example", "A", search=False))
    assert [str(rr) for rr in ans] == ["192.0.2.41"]


def test_port_and_timeout_apply_to_the_system_servers_too() -> None:
    r = resolver(DnsSettings(port=5353, timeout=0.7))
    assert r.nameservers  # /etc/resolv.conf's, or the 127.0.0.1 fallback
    assert (r.port, r.timeout, r.lifetime) == (5353, 0.7, 0.7)


@pytest.mark.root
def test_without_resolv_conf_servers_it_asks_localhost(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare (a private mount namespace)")
    empty = tmp_path / "resolv.conf"
    empty.write_text("# no nameserver\n")
    code = (
        "from mailwarden.dnsutil import async_resolver, resolver;"
        "print(resolver().nameservers, async_resolver().nameservers)"
    )
    out = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c",
         'mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3"', "sh",
         str(empty), sys.executable, code],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert out.stdout.split() == ["['127.0.0.1']", "['127.0.0.1']"]
