#!/usr/bin/env python3
"""End-to-end benchmark: ``mailwarden analyze --json`` against Debian's ``pflogsumm``.

``make bench`` runs this. It generates a format-faithful Postfix log with ``bench/genlog.py``
(2,000,000 lines by default, cached in ``bench/work/``), reads it once so both tools start with
it in the page cache, then runs, as separate processes and in this order:

* ``mailwarden analyze --json --db sqlite:///bench/work/bench.db FILE`` into a fresh store
  (the figure that counts: interpreter start, parsing, storing and reporting included);
* the same again on the same store (every line is read again; nothing new is stored);
* another generated log of the same size (next seed) into that store (the daily case: indexes
  maintained row by row);
* ``mailwarden analyze --json --no-store FILE`` (the cost of storing, by difference);
* ``pflogsumm FILE``.

For each: wall time, lines/s, CPU time (user+sys of the process tree) and peak memory, measured
two ways: the largest single process (``ru_maxrss`` from ``wait4``, what ``/usr/bin/time -v``
reports) and the peak of the *sum* over the whole process tree, sampled from /proc every 100 ms
(PSS: pages the forked workers share with their parent are split between them rather than
counted in each; the RSS sum is recorded too): the honest figure for a multi-process tool.
Ratios against pflogsumm are printed and everything goes to ``bench/out/results.json``; the
fresh-store analyze JSON to ``bench/out/analyze.json``.

Usage: ``python bench/run.py [--lines N] [--seed S] [--quick] [--skip-pflogsumm]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
OUT = BENCH / "out"
TARGET_SPEEDUP = 15.0
TARGET_MEMORY = 1 / 3


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 22):
            n += chunk.count(b"\n")
    return n


def generate(lines: int, seed: int) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"genlog-{lines}-s{seed}.log"
    if not out.exists():
        print(f"generating {out.name} with bench/genlog.py ...", flush=True)
        tmp = out.with_suffix(".tmp")
        subprocess.run(
            [
                sys.executable,
                str(BENCH / "genlog.py"),
                "--lines",
                str(lines),
                "--seed",
                str(seed),
                "--out",
                str(tmp),
            ],
            check=True,
        )
        tmp.rename(out)
    return out


def _tree_kb(root: int) -> tuple[int, int]:
    """``(PSS, RSS)`` summed over ``root`` and all its descendants, in KiB (0 when gone).

    PSS splits the pages that processes share (copy on write after fork) between them; RSS
    counts them in every process."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
    pss = rss = 0
    todo = [root]
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, ()))
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Rss:"):
                        rss += int(line.split()[1])
                    elif line.startswith("Pss:"):
                        pss += int(line.split()[1])
                        break
        except OSError:
            pass
    return pss, rss


def measure(argv: list[str], stdout: Path, env: dict[str, str] | None = None) -> dict[str, float]:
    """Run ``argv`` (stdout to a file); wall, CPU, peak RSS (single process and tree)."""
    peak = [0, 0]
    errfile = stdout.with_suffix(".stderr")
    with stdout.open("wb") as out, errfile.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, env=env)
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                pss, rss = _tree_kb(proc.pid)
                peak[0] = max(peak[0], pss)
                peak[1] = max(peak[1], rss)
                stop.wait(0.1)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        # wait4: the resource usage of this child and the descendants it waited for
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        th.join()
    if proc.returncode != 0:
        sys.stderr.write(errfile.read_text(errors="replace"))
        raise SystemExit(f"{argv[0]} failed with exit code {proc.returncode}")
    return {
        "wall_s": round(wall, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "max_rss_mb": round(ru.ru_maxrss / 1024, 1),  # largest single process (time -v)
        "tree_pss_mb": round(peak[0] / 1024, 1),  # peak over the process tree, shared split
        "tree_rss_mb": round(peak[1] / 1024, 1),  # the same counting shared pages repeatedly
    }


def _accelerated(env: dict[str, str]) -> bool:
    """Whether the measured mailwarden ran its C accelerator (built and not turned off)."""
    code = "from mailwarden.sources import accel; print(accel.available())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    return out.stdout.strip() == "True"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="only the fresh-store analyze run")
    ap.add_argument("--skip-pflogsumm", action="store_true")
    ap.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the measured commands at this niceness (e.g. -10 as root on a shared machine)",
    )
    a = ap.parse_args()
    if a.nice:
        try:
            os.nice(a.nice)  # inherited by every measured process (and this one)
        except PermissionError:
            raise SystemExit("--nice below 0 needs root") from None

    log = generate(a.lines, a.seed)
    n = count_lines(log)  # also warms the page cache
    OUT.mkdir(parents=True, exist_ok=True)
    mw = shutil.which("mailwarden", path=str(Path(sys.executable).parent)) or "mailwarden"
    db = WORK / "bench.db"
    env = dict(os.environ)
    # a fixed, empty config: the defaults are what is measured
    env["MAILWARDEN_CONFIG"] = str(WORK / "no-config.toml")
    env["MAILWARDEN_ETC"] = str(WORK / "no-etc")

    def fresh_db() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)

    runs: dict[str, dict[str, float]] = {}
    n2 = n
    print(f"input: {log} ({n:,} lines, {log.stat().st_size / 1e6:.0f} MB)", flush=True)
    fresh_db()
    analyze = [mw, "analyze", "--json", "--db", f"sqlite:///{db}", str(log)]
    runs["analyze (fresh store)"] = measure(analyze, OUT / "analyze.json", env)
    doc = json.loads((OUT / "analyze.json").read_text())
    if not a.quick:
        runs["analyze (same file again)"] = measure(analyze, OUT / "analyze-again.json", env)
        # another log of the same size into the now full store: the daily case, where the
        # indexes are maintained row by row instead of built at the end
        log2 = generate(a.lines, a.seed + 1)
        n2 = count_lines(log2)  # also the page cache
        second = [mw, "analyze", "--json", "--db", f"sqlite:///{db}", str(log2)]
        runs["analyze (2nd log, full store)"] = measure(second, OUT / "analyze-second.json", env)
        nostore = [mw, "analyze", "--json", "--no-store", str(log)]
        runs["analyze --no-store"] = measure(nostore, OUT / "analyze-nostore.json", env)
    pfl = shutil.which("pflogsumm")
    if pfl and not a.skip_pflogsumm:
        runs["pflogsumm"] = measure([pfl, str(log)], OUT / "pflogsumm.txt")
    elif not a.skip_pflogsumm:
        print("pflogsumm not installed (apt-get install pflogsumm): no comparison", flush=True)

    for name, r in runs.items():
        r["lines_per_s"] = round((n2 if "2nd log" in name else n) / r["wall_s"])
    print()
    print(f"{'run':<28}{'wall s':>7}{'cpu s':>7}{'lines/s':>10}{'RSS MB':>7}{'tree PSS':>9}")
    for name, r in runs.items():
        print(
            f"{name:<28}{r['wall_s']:>7.2f}{r['cpu_s']:>7.2f}{r['lines_per_s']:>10,}"
            f"{r['max_rss_mb']:>7.0f}{r['tree_pss_mb']:>9.0f}"
        )
    summary: dict[str, object] = {
        "input": {"path": str(log), "lines": n, "bytes": log.stat().st_size},
        "runs": runs,
        "analyze": {
            "lines": doc["lines"],
            "totals": doc["totals"],
            "store": doc["store"],
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_1m_at_end": os.getloadavg()[0],
            "nice": a.nice,
        },
        "c_accelerator": _accelerated(env),
    }
    if "pflogsumm" in runs:
        p, m = runs["pflogsumm"], runs["analyze (fresh store)"]
        speed = p["wall_s"] / m["wall_s"]
        mem_single = m["max_rss_mb"] / p["max_rss_mb"]
        mem_tree = m["tree_pss_mb"] / p["tree_pss_mb"]
        summary["ratios"] = {
            "speedup_vs_pflogsumm": round(speed, 2),
            "memory_vs_pflogsumm_single_process": round(mem_single, 3),
            "memory_vs_pflogsumm_process_tree": round(mem_tree, 3),
        }
        print()
        print(
            f"analyze vs pflogsumm: {speed:.1f}x the throughput (target >= {TARGET_SPEEDUP:.0f}x), "
            f"{mem_single:.2f}x the peak RSS of one process, {mem_tree:.2f}x of the process tree "
            f"(target <= {TARGET_MEMORY:.2f}x)"
        )
        ns = runs.get("analyze --no-store")
        if ns is not None:
            ratios: dict[str, float] = summary["ratios"]  # type: ignore[assignment]
            ratios["no_store_speedup_vs_pflogsumm"] = round(p["wall_s"] / ns["wall_s"], 2)
            ratios["no_store_memory_single_process"] = round(ns["max_rss_mb"] / p["max_rss_mb"], 3)
            ratios["no_store_memory_process_tree"] = round(ns["tree_pss_mb"] / p["tree_pss_mb"], 3)
            print(
                f"without storing: {ratios['no_store_speedup_vs_pflogsumm']:.1f}x the throughput, "
                f"{ratios['no_store_memory_single_process']:.2f}x / "
                f"{ratios['no_store_memory_process_tree']:.2f}x the memory"
            )
    load = os.getloadavg()[0]
    print(f"load average at the end: {load:.2f} (other work on the machine skews wall times)")
    (OUT / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"results: {OUT / 'results.json'}; report: {OUT / 'analyze.json'}")


if __name__ == "__main__":
    main()
