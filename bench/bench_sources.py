#!/usr/bin/env python3
"""Benchmark the log spine (``mailwarden.sources``): lines per second of the syslog + Postfix
line parser (``parse_lines``), of parsing plus correlation the event way
(``Correlator.run(parse_lines(...))``) and of the fused fast path (``correlate_lines``), in
one process and sharded over two processes (each reads the whole file and keeps its shard),
on a genlog file in both stamp forms. Reports CPU seconds too: the machine is shared, CPU time
is the steadier figure.

Usage:  .venv/bin/python bench/bench_sources.py [--lines N] [--quick]
Writes bench/out/sources.json and prints a table. ``run()`` returns the same dict.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.sources import (  # noqa: E402
    Correlator,
    Envelope,
    ParseStats,
    correlate_lines,
    parse_lines,
)

WORK = ROOT / "bench" / "work"
OUT = ROOT / "bench" / "out"
GENLOG = ROOT / "bench" / "genlog.py"


def ensure_log(lines: int, iso: bool) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    path = WORK / f"genlog-{lines}-s1{'-iso' if iso else ''}.log"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        cmd = [sys.executable, str(GENLOG), "--lines", str(lines), "--out", str(tmp), "--seed", "1"]
        subprocess.run([*cmd, *(["--iso"] if iso else [])], check=True, stdout=subprocess.DEVNULL)
        tmp.rename(path)
    return path


def _one(args: tuple[str, str, tuple[int, int] | None]) -> dict[str, Any]:
    mode, path, shard = args
    stats = ParseStats()
    out = 0
    t0, c0 = time.perf_counter(), time.process_time()
    with open(path, "rb", buffering=1 << 20) as fh:
        env = Envelope(source=path)
        if mode == "parse_lines":
            for _ in parse_lines(fh, env=env, stats=stats, shard=shard):
                out += 1
        elif mode == "events+Correlator":
            for _ in Correlator().run(parse_lines(fh, env=env, stats=stats, shard=shard)):
                out += 1
        else:
            for _ in correlate_lines(fh, env=env, stats=stats, shard=shard):
                out += 1
    return {
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - c0,
        "lines": stats.total,
        "unparsed": stats.unparsed,
        "out": out,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(lines: int = 2_000_000, quick: bool = False) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count()}, "runs": []}
    modes = (
        ["correlate_lines"] if quick else ["parse_lines", "events+Correlator", "correlate_lines"]
    )
    for iso in (False, True):
        path = ensure_log(lines, iso)
        total = 0
        with open(path, "rb") as fh:  # count the lines; the file ends up in the page cache
            while chunk := fh.read(1 << 24):
                total += chunk.count(b"\n")
        for mode in modes:
            single = _one((mode, str(path), None))
            t0 = time.perf_counter()
            with ProcessPoolExecutor(2) as pool:
                parts = list(pool.map(_one, [(mode, str(path), (0, 2)), (mode, str(path), (1, 2))]))
            wall2 = time.perf_counter() - t0
            assert sum(p["lines"] for p in parts) == total == single["lines"]
            results["runs"].append(
                {
                    "file": path.name,
                    "form": "rfc3339" if iso else "traditional",
                    "mode": mode,
                    "lines": total,
                    "unparsed": single["unparsed"],
                    "one_process": {
                        "wall_s": round(single["wall_s"], 3),
                        "cpu_s": round(single["cpu_s"], 3),
                        "lines_per_s": round(total / single["wall_s"]),
                        "lines_per_cpu_s": round(total / single["cpu_s"]),
                        "max_rss_mb": round(single["max_rss_mb"], 1),
                    },
                    "two_processes": {
                        "wall_s": round(wall2, 3),
                        "lines_per_s": round(total / wall2),
                        "cpu_s": round(sum(p["cpu_s"] for p in parts), 3),
                    },
                }
            )
    results["machine"]["load_1m_at_end"] = os.getloadavg()[0]
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--quick", action="store_true", help="only correlate_lines")
    a = ap.parse_args()
    res = run(a.lines, a.quick)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "sources.json").write_text(json.dumps(res, indent=1) + "\n")
    head = ("form", "mode", "1 proc l/s", "l/cpu-s", "2 procs l/s", "RSS MB")
    print(f"{head[0]:12} {head[1]:18} {head[2]:>11} {head[3]:>9} {head[4]:>12} {head[5]:>7}")
    for r in res["runs"]:
        one, two = r["one_process"], r["two_processes"]
        print(
            f"{r['form']:12} {r['mode']:18} {one['lines_per_s']:>11,} {one['lines_per_cpu_s']:>9,} "
            f"{two['lines_per_s']:>12,} {one['max_rss_mb']:>7}"
        )
    print(f"load (1 min) at the end: {res['machine']['load_1m_at_end']:.2f}")


if __name__ == "__main__":
    main()
