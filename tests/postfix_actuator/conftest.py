"""Fixtures for the Postfix actuator tests: the real loopback DNS server and a socketmap server
running in a background thread (real TCP sockets, real dnspython queries)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailwarden.config import DnsSettings
from mailwarden.dnsutil import async_resolver
from mailwarden.postfix.mx import MxCache
from mailwarden.postfix.socketmap import Policy, SocketmapServer, ViewWatcher, write_view


def suffix_provider(table: dict[str, str]) -> Callable[[str], str]:
    """host -> provider by label-aligned suffix (the classifier's job in production)."""

    def lookup(host: str) -> str:
        for suffix, name in table.items():
            if host == suffix or host.endswith("." + suffix):
                return name
        return ""

    return lookup


class RunningMap:
    """A socketmap server on 127.0.0.1:<free port> in its own thread and event loop."""

    def __init__(
        self,
        view: Path,
        nameservers: list[str],
        provider_for_host: Callable[[str], str],
        dns_port: int = 53,
        **server_kw: Any,
    ) -> None:
        self.view = view
        self.loop = asyncio.new_event_loop()
        lookup_timeout = server_kw.pop("lookup_timeout", 0.5)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._args = (nameservers, dns_port, provider_for_host, lookup_timeout, server_kw)
        self.host = "127.0.0.1"
        self.port = 0
        self.server: SocketmapServer | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        nameservers, port, prov, lookup_timeout, kw = self._args

        async def boot() -> None:
            mx = MxCache(async_resolver(DnsSettings(nameservers=nameservers, port=port)))
            policy = Policy(ViewWatcher(self.view), mx, prov, lookup_timeout=lookup_timeout)
            self.server = SocketmapServer(policy, **kw)
            _, self.port = await self.server.start("127.0.0.1", 0)
            self._ready.set()

        self.loop.run_until_complete(boot())
        self.loop.run_forever()

    def start(self) -> RunningMap:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("socketmap server did not start")
        return self

    def stop(self) -> None:
        if self.server is not None:
            fut = asyncio.run_coroutine_threadsafe(self.server.close(), self.loop)
            fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def publish(self, providers: dict[str, dict[str, Any]], never_park: list[str] = ()) -> None:  # type: ignore[assignment]
        """Write a new view and wait until the server has loaded it."""
        assert self.server is not None
        before = self.server.policy.watcher.reloads
        write_view(self.view, providers, never_park)
        for _ in range(200):
            if self.server.policy.watcher.reloads > before:
                return
            threading.Event().wait(0.01)
        raise TimeoutError("view not reloaded")

    @property
    def stats(self) -> Any:
        assert self.server is not None
        return self.server.policy.stats


@pytest.fixture
def socketmap(tmp_path: Path, dns_server: Any) -> Iterator[Callable[..., RunningMap]]:
    """Factory: ``socketmap(providers_by_suffix, **server_kw)`` -> a started RunningMap."""
    made: list[RunningMap] = []

    def make(table: dict[str, str], **kw: Any) -> RunningMap:
        nameservers = kw.pop("nameservers", [dns_server.address])
        port = kw.pop("dns_port", dns_server.port)
        m = RunningMap(
            tmp_path / f"view{len(made)}.json",
            nameservers,
            suffix_provider(table),
            dns_port=port,
            **kw,
        )
        made.append(m.start())
        return m

    yield make
    for m in made:
        m.stop()
