#!/usr/bin/env python3
"""Benchmark of the breaker's socketmap transport lookup (``mailwarden.postfix.socketmap``).

A server process runs the real :class:`~mailwarden.postfix.socketmap.SocketmapServer` on
127.0.0.1 (one asyncio loop, as ``mailwarden postfix socketmap`` does); client processes keep 50
connections busy speaking the socketmap protocol (netstring request, wait for the answer, next
request: what trivial-rewrite does) for a fixed time. Reported per scenario: lookups/s and
latency p50/p90/p99/max measured at the client (send to full answer).

Each scenario runs saturated (every client sends its next request as soon as the answer is in:
the maximum rate; latency then is mostly queueing, by Little's law 50 / rate) and paced at the
target load of 10,000 lookups/s spread over the 50 connections (latency of a loaded server).

Scenarios:

* ``idle``: no breaker open (the common case: every answer is NOTFOUND without any lookup);
* ``open``: one provider open; recipients spread over 2,000 domains of 4 providers, MX answers
  cached (the steady state; a cold lookup is bounded by ``lookup_timeout`` and fails open);
  a quarter of the answers are ``retry:``.

Targets (issue 3): >= 10,000 lookups/s and p99 < 2 ms with 50 concurrent clients on loopback.

Usage: ``.venv/bin/python bench/bench_socketmap.py [--seconds 5] [--clients 50] [--procs 2]``.
Writes bench/out/socketmap.json; ``run()`` returns the same dict, for a runner.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.config import DnsSettings  # noqa: E402
from mailwarden.dnsutil import async_resolver  # noqa: E402
from mailwarden.postfix.mx import MxCache  # noqa: E402
from mailwarden.postfix.socketmap import (  # noqa: E402
    Policy,
    SocketmapServer,
    ViewWatcher,
    write_view,
)

PROVIDERS = ("swisscom", "google", "yahoo", "gmx")
N_DOMAINS = 2000


def domain(i: int) -> str:
    return f"d{i}.{PROVIDERS[i % len(PROVIDERS)]}-bench.example"


def _serve(view: str, port_q: Any, ready: Any) -> None:
    async def main() -> None:
        # Nothing answers on 127.0.0.1:9: every MX answer must come from the warmed cache.
        dns = DnsSettings(nameservers=["127.0.0.1"], port=9, timeout=0.2)
        mx = MxCache(async_resolver(dns), max_ttl=86400)
        for i in range(N_DOMAINS):
            p = PROVIDERS[i % len(PROVIDERS)]
            mx.put(domain(i), (f"mx1.{p}-mx.example",), 86400)

        def provider(host: str) -> str:
            return host.split(".")[1].removesuffix("-mx")

        policy = Policy(ViewWatcher(Path(view)), mx, provider, lookup_timeout=0.5)
        server = SocketmapServer(policy, max_connections=5000)
        _, port = await server.start("127.0.0.1", 0)
        port_q.put(port)
        ready.wait()
        await asyncio.Event().wait()

    asyncio.run(main())


def _client(
    port: int, conns: int, seconds: float, seed: int, out_q: Any, rate: float = 0.0
) -> None:
    """``conns`` connections; each sends its next request as soon as the answer is in
    (``rate`` 0: saturation) or at its share of ``rate`` requests/s (paced, open loop: a late
    answer does not lower the offered load)."""

    async def one(k: int, deadline: float, lat: list[int]) -> int:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        n = 0
        i = seed * 7919 + k * 104729
        gap = conns / rate if rate else 0.0
        nxt = time.monotonic() + (k / conns) * gap
        while time.monotonic() < deadline:
            if gap:
                delay = nxt - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                nxt += gap
            i += 1
            key = f"user{i}@{domain(i % N_DOMAINS)}"
            body = f"transport {key}".encode()
            t0 = time.perf_counter_ns()
            writer.write(b"%d:%s," % (len(body), body))
            head = await reader.readuntil(b":")
            await reader.readexactly(int(head[:-1]) + 1)
            lat.append(time.perf_counter_ns() - t0)
            n += 1
        writer.close()
        return n

    async def main() -> tuple[int, list[int]]:
        lat: list[int] = []
        deadline = time.monotonic() + seconds
        counts = await asyncio.gather(*(one(k, deadline, lat) for k in range(conns)))
        return sum(counts), lat

    n, lat = asyncio.run(main())
    out_q.put((n, lat))


def pct(sorted_ns: list[int], p: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, round(p / 100 * (len(sorted_ns) - 1)))
    return sorted_ns[i] / 1e6


def scenario(
    name: str, view: Path, providers: dict[str, Any], *, port: int, clients: int, procs: int,
    seconds: float, rate: float = 0.0,
) -> dict[str, Any]:  # fmt: skip
    write_view(view, providers)
    time.sleep(0.3)  # the server polls the view every 50 ms
    q: Any = mp.Queue()
    per = [clients // procs + (1 if i < clients % procs else 0) for i in range(procs)]
    ps = [
        mp.Process(target=_client, args=(port, n, seconds, i, q, rate * n / clients))
        for i, n in enumerate(per)
    ]
    t0 = time.monotonic()
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.monotonic() - t0
    total = sum(n for n, _ in results)
    lat = sorted(x for _, ls in results for x in ls)
    return {
        "scenario": name,
        "offered_per_s": rate or "saturation",
        "clients": clients,
        "client_processes": procs,
        "seconds": seconds,
        "lookups": total,
        "lookups_per_s": round(total / seconds),
        "p50_ms": round(pct(lat, 50), 3),
        "p90_ms": round(pct(lat, 90), 3),
        "p99_ms": round(pct(lat, 99), 3),
        "max_ms": round(lat[-1] / 1e6, 3) if lat else 0.0,
        "wall_s": round(wall, 2),
    }


def run(seconds: float = 5.0, clients: int = 50, procs: int = 2) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mw-bench-sm-"))
    view = tmp / "view.json"
    write_view(view, {})
    port_q: Any = mp.Queue()
    ready = mp.Event()
    server = mp.Process(target=_serve, args=(str(view), port_q, ready), daemon=True)
    server.start()
    try:
        port = port_q.get(timeout=30)
        ready.set()
        open_view = {
            "swisscom": {
                "state": "open",
                "code": "4.7.1",
                "reason": "circuit open for provider swisscom: our IP is blocked",
            }
        }
        kw: dict[str, Any] = {"port": port, "clients": clients, "procs": procs}
        scenario("warm-up", view, open_view, seconds=2.0, **kw)  # first connections, caches
        out = {
            "cpus": os.cpu_count(),
            "targets": {"lookups_per_s": 10000, "p99_ms": 2.0},
            "results": [
                scenario("idle", view, {}, seconds=seconds, **kw),
                scenario("open", view, open_view, seconds=seconds, **kw),
                scenario("idle", view, {}, seconds=seconds, rate=10000, **kw),
                scenario("open", view, open_view, seconds=seconds, rate=10000, **kw),
            ],
        }
    finally:
        server.terminate()
        server.join(5)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--procs", type=int, default=2, help="client processes")
    a = ap.parse_args()
    res = run(a.seconds, a.clients, a.procs)
    outdir = ROOT / "bench" / "out"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "socketmap.json").write_text(json.dumps(res, indent=1) + "\n")
    for r in res["results"]:
        load = "saturated" if r["offered_per_s"] == "saturation" else f"{r['offered_per_s']}/s"
        print(
            f"{r['scenario']:5s} {load:>10s}: {r['lookups_per_s']:>7,} lookups/s  "
            f"p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  max {r['max_ms']:.1f} ms  "
            f"({r['clients']} clients)"
        )


if __name__ == "__main__":
    main()
