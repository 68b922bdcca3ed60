"""The socketmap transport lookup that enforces the breaker (socketmap_table(5)).

Postfix asks ``transport user@domain`` (a netstring) for every recipient it resolves; we answer

* ``OK retry:4.7.1 <reason>`` when the domain's provider is open (the recipient is parked:
  deferred by error(8) in retry mode, no connection made), or probing and this round's probe
  quota is used up;
* ``OK <clone>:`` when the provider is slowed (a throttled smtp clone, empty next-hop);
* ``NOTFOUND `` otherwise, and on **any** internal error, malformed key or DNS timeout: a TEMP
  answer or a dead server defers *all* mail, so this server fails open.

The breaker engine publishes what to enforce as a small JSON file (:class:`EnforcementView`,
written atomically by :func:`write_view`); the server re-reads it when it changes (polled every
``poll`` seconds), so enforcement follows detection within a fraction of a second and the server
keeps working on the last good view if the engine dies. Postfix keys are full addresses (it
never sends bare domains to a socketmap), plus ``*`` once per trivial-rewrite start.

Bad clients (malformed or oversized netstrings, stuck half-requests, floods of connections) are
disconnected; they never affect other connections. Run as ``python -m mailwarden.postfix
socketmap`` (``mailwarden run`` supervises it and restarts it when it dies).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mailwarden.errors import ValidationError
from mailwarden.postfix import validate
from mailwarden.postfix.mx import Hosts, MxCache

log = logging.getLogger(__name__)

NOTFOUND = b"9:NOTFOUND ,"
MAP_NAME = "transport"
VIEW_VERSION = 1


# --------------------------------------------------------------------------------------
# What to enforce
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """Enforcement for one provider."""

    state: str  # "open", "probing", "slowed"
    answer: str = ""  # the validated retry: answer while parked
    transport: str = ""  # the validated clone name while slowed
    probe_round: int = 0
    probe_recipients: int = 0
    wire: bytes = b""  # the encoded reply (netstring) for this entry


@dataclass(slots=True)
class EnforcementView:
    """The providers to act on, as published by the engine, plus the never-park list."""

    providers: dict[str, Entry] = field(default_factory=dict)
    never_park: frozenset[str] = frozenset()  # addresses and domains (the admin's alert route)
    generated: float = 0.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EnforcementView:
        if data.get("version") != VIEW_VERSION:
            raise ValueError(f"unknown view version {data.get('version')!r}")
        provs: dict[str, Entry] = {}
        for name, e in dict(data.get("providers", {})).items():
            state = str(e.get("state", ""))
            if state not in ("open", "probing", "slowed"):
                continue
            answer = transport = ""
            if state in ("open", "probing"):
                answer = validate.retry_answer(str(e.get("code", "4.7.1")), str(e["reason"]))
            if state == "slowed":
                t = str(e.get("transport", ""))
                if not t:
                    continue  # no clone installed: do nothing rather than guess
                transport = validate.transport(t)
            wire = ns(f"OK {transport}:") if state == "slowed" else ns(f"OK {answer}")
            provs[str(name)] = Entry(
                state,
                answer,
                transport,
                int(e.get("probe_round", 0)),
                max(0, int(e.get("probe_recipients", 0))),
                wire,
            )
        never: set[str] = set()
        for item in data.get("never_park", []):
            s = str(item).lower()
            try:
                never.add("@".join(validate.address(s)) if "@" in s else validate.domain(s))
            except ValidationError:
                log.warning("never_park: ignoring invalid entry %r", s[:80])
        return cls(provs, frozenset(never), float(data.get("generated", 0.0)))

    @classmethod
    def load(cls, path: Path) -> EnforcementView:
        with path.open("rb") as fh:
            return cls.from_json(json.load(fh))


def write_view(
    path: Path,
    providers: dict[str, dict[str, Any]],
    never_park: Iterable[str] = (),
) -> None:
    """Publish a view atomically (write a temporary file, fsync, rename)."""
    data = {
        "version": VIEW_VERSION,
        "generated": time.time(),
        "providers": providers,
        "never_park": sorted(never_park),
    }
    EnforcementView.from_json(data)  # refuse to publish what the server would refuse to load
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class ViewWatcher:
    """Keeps the current view, reloading the file when its mtime/size/inode changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.view = EnforcementView()
        self._sig: tuple[int, int, int] | None = None
        self.reloads = 0
        self.errors = 0

    def check(self) -> bool:
        """Reload if the file changed; True when a new view was loaded. Never raises."""
        if self.path is None:
            return False
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self._sig is not None:
                self._sig = None
                self.view = EnforcementView()  # the engine withdrew the view: enforce nothing
                return True
            return False
        except OSError:
            return False
        sig = (st.st_mtime_ns, st.st_size, st.st_ino)
        if sig == self._sig:
            return False
        try:
            view = EnforcementView.load(self.path)
        except Exception as exc:  # keep the last good view
            self.errors += 1
            log.warning("enforcement view %s not loaded (keeping the last one): %s", self.path, exc)
            self._sig = sig
            return False
        self._sig = sig
        self.view = view
        self.reloads += 1
        return True


# --------------------------------------------------------------------------------------
# Lookup policy
# --------------------------------------------------------------------------------------


def ns(text: str) -> bytes:
    """Encode one netstring."""
    b = text.encode()
    return b"%d:%s," % (len(b), b)


@dataclass(slots=True)
class Stats:
    requests: int = 0
    parked: int = 0
    slowed: int = 0
    probes: int = 0
    notfound: int = 0
    errors: int = 0
    timeouts: int = 0
    malformed: int = 0
    connections: int = 0
    refused: int = 0


class Policy:
    """Turns a lookup key into an answer, using the view, the MX cache and the provider map."""

    def __init__(
        self,
        watcher: ViewWatcher,
        mx: MxCache,
        provider_for_host: Callable[[str], str],
        *,
        lookup_timeout: float = 0.5,
    ) -> None:
        self.watcher = watcher
        self.mx = mx
        self.provider_for_host = provider_for_host
        self.lookup_timeout = lookup_timeout
        self.stats = Stats()
        self._host_provider: dict[str, str] = {}
        self._probes: dict[str, tuple[int, int]] = {}  # provider -> (round, used)

    def _domain(self, name: str, key: str) -> tuple[str, Hosts | None] | None:
        """The recipient domain to decide on and its cached MX hosts (None on a cache miss), or
        None for NOTFOUND right away."""
        if name != MAP_NAME or "@" not in key:
            return None
        view = self.watcher.view
        if not view.providers:
            return None
        local, _, dom = key.rpartition("@")
        if not validate.LOCAL_PART.fullmatch(local):
            return None
        dom = dom.lower()
        hosts = self.mx.cached(dom)
        if hosts is None:  # cached domains were validated when they went in
            try:
                dom = validate.domain(dom)
            except ValidationError:
                return None
            hosts = self.mx.cached(dom)
        if dom in view.never_park or (
            view.never_park and f"{local.lower()}@{dom}" in view.never_park
        ):
            return None
        return dom, hosts

    def answer_now(self, name: str, key: str) -> bytes | None:
        """The answer if it needs no DNS query; None when the caller must await :meth:`answer`."""
        found = self._domain(name, key)
        if found is None:
            return NOTFOUND
        hosts = found[1]
        if hosts is None:
            return None
        return self._decide(hosts)

    async def answer(self, name: str, key: str) -> bytes:
        """Full lookup with a deadline; fails open."""
        found = self._domain(name, key)
        if found is None:
            return NOTFOUND
        dom, hosts = found
        if hosts is None:
            task = self.mx.resolve(dom)
            try:
                hosts = await asyncio.wait_for(asyncio.shield(task), self.lookup_timeout)
            except TimeoutError:
                self.stats.timeouts += 1
                return NOTFOUND  # the query goes on in the background and fills the cache
        return self._decide(hosts)

    def _provider(self, host: str) -> str:
        p = self._host_provider.get(host)
        if p is None:
            try:
                p = self.provider_for_host(host) or ""
            except Exception:
                log.exception("provider lookup failed for %s", host)
                p = ""
            if len(self._host_provider) > 100_000:
                self._host_provider.clear()
            self._host_provider[host] = p
        return p

    def _decide(self, hosts: tuple[str, ...]) -> bytes:
        view = self.watcher.view
        entry: Entry | None = None
        provider = ""
        for h in hosts:
            p = self._provider(h)
            e = view.providers.get(p) if p else None
            if e is not None and (entry is None or _rank(e) > _rank(entry)):
                entry, provider = e, p
        if entry is None:
            self.stats.notfound += 1
            return NOTFOUND
        if entry.state == "slowed":
            self.stats.slowed += 1
            return entry.wire
        if entry.state == "probing":
            rnd, used = self._probes.get(provider, (-1, 0))
            if rnd != entry.probe_round:
                rnd, used = entry.probe_round, 0
            if used < entry.probe_recipients:
                self._probes[provider] = (rnd, used + 1)
                self.stats.probes += 1
                return NOTFOUND  # this one goes out as a probe
            self._probes[provider] = (rnd, used)
        self.stats.parked += 1
        return entry.wire


def _rank(e: Entry) -> int:
    return {"open": 3, "probing": 2, "slowed": 1}.get(e.state, 0)


# --------------------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------------------


class _Conn(asyncio.Protocol):
    """One client connection: netstring framing, strictly in-order answers, timeouts."""

    def __init__(self, server: SocketmapServer) -> None:
        self.server = server
        self.policy = server.policy
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pending: asyncio.Task[None] | None = None  # an async answer in progress
        self.queue: list[tuple[str, str]] = []  # requests received while one is pending
        self.partial_since: float | None = None
        self.last_activity = time.monotonic()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if len(self.server.conns) >= self.server.max_connections:
            self.policy.stats.refused += 1
            transport.close()
            return
        self.server.conns.add(self)
        self.policy.stats.connections += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        if self.pending is not None:
            self.pending.cancel()
        self.transport = None

    def _fail(self, why: str) -> None:
        self.policy.stats.malformed += 1
        log.debug("socketmap client dropped: %s", why)
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        self.buf += data
        while self.buf:
            colon = self.buf.find(b":", 0, 8)
            if colon < 0:
                if len(self.buf) >= 8 or not self.buf.isdigit():
                    return self._fail("bad netstring length")
                break
            digits = bytes(self.buf[:colon])
            if not digits.isdigit():
                return self._fail("bad netstring length")
            n = int(digits)
            if n > self.server.max_request:
                return self._fail(f"request of {n} bytes")
            end = colon + 1 + n
            if len(self.buf) < end + 1:
                break
            if self.buf[end] != ord(","):
                return self._fail("netstring without trailing comma")
            raw = bytes(self.buf[colon + 1 : end])
            del self.buf[: end + 1]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = ""
            name, _, key = text.partition(" ")
            self._request(name, key)
            if self.transport is None:
                return None
        self.partial_since = time.monotonic() if self.buf else None
        return None

    def _request(self, name: str, key: str) -> None:
        self.policy.stats.requests += 1
        if self.pending is not None:
            self.queue.append((name, key))
            return
        try:
            out = self.policy.answer_now(name, key)
        except Exception:
            self.policy.stats.errors += 1
            log.exception("socketmap lookup failed; answering NOTFOUND")
            out = NOTFOUND
        if out is not None:
            self._write(out)
        else:
            self.pending = asyncio.ensure_future(self._slow(name, key))

    async def _slow(self, name: str, key: str) -> None:
        try:
            while True:
                try:
                    out = await self.policy.answer(name, key)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.policy.stats.errors += 1
                    log.exception("socketmap lookup failed; answering NOTFOUND")
                    out = NOTFOUND
                self._write(out)
                if not self.queue:
                    break
                name, key = self.queue.pop(0)
        finally:
            self.pending = None

    def _write(self, out: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out)


class SocketmapServer:
    """An asyncio socketmap server on ``host:port`` (TCP)."""

    def __init__(
        self,
        policy: Policy,
        *,
        max_request: int = 4096,
        request_timeout: float = 5.0,
        idle_timeout: float = 300.0,
        max_connections: int = 1000,
        poll: float = 0.05,
    ) -> None:
        self.policy = policy
        self.max_request = max_request
        self.request_timeout = request_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.poll = poll
        self.conns: set[_Conn] = set()
        self._server: asyncio.Server | None = None
        self._janitor: asyncio.Task[None] | None = None

    async def start(self, host: str, port: int) -> tuple[str, int]:
        """Listen; returns the bound address (port 0 picks a free one)."""
        self.policy.watcher.check()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Conn(self), host, port, reuse_address=True, backlog=512
        )
        self._janitor = asyncio.ensure_future(self._housekeeping())
        sock = self._server.sockets[0].getsockname()
        return str(sock[0]), int(sock[1])

    async def _housekeeping(self) -> None:
        """Reload the view when it changes; drop stuck and idle connections."""
        while True:
            await asyncio.sleep(self.poll)
            try:
                self.policy.watcher.check()
                now = time.monotonic()
                for c in list(self.conns):
                    if c.partial_since is not None and now - c.partial_since > self.request_timeout:
                        c._fail("request not completed in time")
                    elif (
                        c.pending is None
                        and now - c.last_activity > self.idle_timeout
                        and c.transport is not None
                    ):
                        c.transport.close()
            except Exception:  # never let housekeeping die
                log.exception("socketmap housekeeping")

    async def close(self) -> None:
        if self._janitor is not None:
            self._janitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._janitor
        if self._server is not None:
            self._server.close()
            for c in list(self.conns):
                if c.transport is not None:
                    c.transport.abort()
            await self._server.wait_closed()
        pending = [c.pending for c in list(self.conns) if c.pending is not None]
        await asyncio.gather(*pending, return_exceptions=True)
        await self.policy.mx.close()

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()
