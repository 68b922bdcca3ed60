#!/usr/bin/env python3
"""Benchmark ``mailwarden trace``: Received parsing speed, analysis time and memory per message
size, and the whole command (process start included) on a message with hundreds of hops.

Usage:  .venv/bin/python bench/bench_trace.py [--quick]
Writes bench/out/trace.json and prints a table. ``run()`` returns the same dict, for a runner.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.config import IdentitySettings, Settings  # noqa: E402
from mailwarden.forensics.received import parse_received  # noqa: E402
from mailwarden.forensics.run import trace_message  # noqa: E402
from mailwarden.identity import detect_identity  # noqa: E402

#: A realistic mix of layouts (Postfix, Exim, Sendmail, qmail, Exchange, Gmail, non-relay).
LAYOUTS = [
    "from h{i}.example.net (h{i}.example.net [192.0.2.{o}]) (using TLSv1.3 with cipher "
    "TLS_AES_256_GCM_SHA384 (256/256 bits)) by mx{j}.example.org (Postfix) with ESMTPS id "
    "4N1x2Y{i}z for <u@example.org>; Tue, 10 Jan 2023 10:{m:02d}:01 +0100 (CET)",
    "from h{i}.example.net ([198.51.100.{o}]:41234 helo=smtp{i}.example.net) by mx{j}.example.org "
    "with esmtps (TLS1.2) tls TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 (Exim 4.94.2) "
    "(envelope-from <n@example.net>) id 1pF0aB-000{i}Xy-Qd; Tue, 10 Jan 2023 09:{m:02d}:00 +0000",
    "from h{i}.example.net (fred@h{i}.example.net [203.0.113.{o}]) by mx{j}.example.org "
    "(8.15.2/8.15.2) with ESMTP id 30CC0A{i}; Tue, 10 Jan 2023 09:{m:02d}:00 GMT",
    "from unknown (HELO laptop{i}) (bob@203.0.113.{o}) by mx{j}.example.org with ESMTPA; "
    "10 Jan 2023 09:{m:02d}:00 -0000",
    "from EXCH{i}.corp.example.org (10.1.2.{o}) by mx{j}.example.org (10.1.2.4) with Microsoft "
    "SMTP Server (version=TLS1_2, cipher=TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384_P384) id "
    "15.1.2507.17; Tue, 10 Jan 2023 09:{m:02d}:00 +0000",
    "(qmail {i} invoked by uid 33); 10 Jan 2023 09:{m:02d}:00 -0000",
]


def make_message(hops: int) -> bytes:
    lines = []
    for k in range(hops):
        i = hops - k
        v = LAYOUTS[k % len(LAYOUTS)].format(i=i, j=i + 1, o=i % 250 + 1, m=(hops - k) % 60)
        lines.append(f"Received: {v}\r\n")
    return ("".join(lines) + "Message-ID: <bench@example.net>\r\n\r\nbody\r\n").encode()


def _identity() -> Any:
    return detect_identity(
        IdentitySettings(ips=["94.130.34.42"], helo_names=["mail.lotsearch.de"]),
        use_postconf=False,
        use_interfaces=False,
    )


def bench_parser(repeat: int) -> dict[str, Any]:
    values = [
        LAYOUTS[k % len(LAYOUTS)].format(i=k, j=k + 1, o=k % 250 + 1, m=k % 60) for k in range(600)
    ]
    data = ROOT / "tests" / "data" / "forensics"
    for name in ("received-cases.jsonl", "received-variants.jsonl"):
        with (data / name).open() as fh:
            values += [json.loads(line)["header"] for line in fh if line.strip()]
    start = time.perf_counter()
    for _ in range(repeat):
        for v in values:
            parse_received(v)
    n = repeat * len(values)
    sec = time.perf_counter() - start
    return {"headers": n, "seconds": round(sec, 3), "per_header_us": round(sec / n * 1e6, 1)}


def bench_trace(sizes: list[int]) -> list[dict[str, Any]]:
    me = _identity()
    settings = Settings()
    trace_message(make_message(5), settings, identity=me, use_store=False)  # warm caches (PSL)
    out = []
    for n in sizes:
        data = make_message(n)
        best = float("inf")
        for _ in range(3 if n <= 1000 else 1):
            start = time.perf_counter()
            trace_message(data, settings, identity=me, use_store=False)
            best = min(best, time.perf_counter() - start)
        tracemalloc.start()
        trace_message(data, settings, identity=me, use_store=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        out.append(
            {
                "hops": n,
                "header_kib": round(len(data) / 1024, 1),
                "seconds": round(best, 4),
                "per_hop_us": round(best / n * 1e6, 1),
                "peak_mib": round(peak / 2**20, 2),
            }
        )
    return out


def bench_cli(hops: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        eml = Path(tmp) / "m.eml"
        eml.write_bytes(make_message(hops))
        env = {**os.environ, "MAILWARDEN_ETC": tmp, "XDG_STATE_HOME": tmp}
        cmd = [sys.executable, "-m", "mailwarden.cli", "trace", "--json", "--no-store", str(eml)]
        times = []
        for _ in range(3):
            start = time.perf_counter()
            p = subprocess.run(cmd, capture_output=True, env=env, timeout=120)
            times.append(time.perf_counter() - start)
            if p.returncode not in (0, 1):
                raise RuntimeError(p.stderr.decode())
        base = [sys.executable, "-m", "mailwarden.cli", "--help"]
        start = time.perf_counter()
        subprocess.run(base, capture_output=True, env=env, timeout=60)
        startup = time.perf_counter() - start
    return {"hops": hops, "seconds_best": round(min(times), 3), "startup_help_s": round(startup, 3)}


def run(quick: bool = False) -> dict[str, Any]:
    sizes = [10, 100, 300, 1000] + ([] if quick else [10_000])
    return {
        "parser": bench_parser(2 if quick else 10),
        "trace": bench_trace(sizes),
        "cli": bench_cli(300),
        "python": sys.version.split()[0],
        "cpus": os.cpu_count(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = ap.parse_args()
    res = run(args.quick)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "trace.json").write_text(json.dumps(res, indent=2) + "\n")
    p = res["parser"]
    print(f"parse_received: {p['headers']} headers, {p['per_header_us']} us/header")
    print(f"{'hops':>7} {'KiB':>8} {'seconds':>9} {'us/hop':>8} {'peak MiB':>9}")
    for r in res["trace"]:
        print(
            f"{r['hops']:>7} {r['header_kib']:>8} {r['seconds']:>9} {r['per_hop_us']:>8} "
            f"{r['peak_mib']:>9}"
        )
    c = res["cli"]
    print(
        f"mailwarden trace --json, {c['hops']} hops: {c['seconds_best']} s "
        f"(of which start-up ~{c['startup_help_s']} s for --help)"
    )


if __name__ == "__main__":
    main()
