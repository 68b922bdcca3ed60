#!/usr/bin/env python3
"""Benchmark and coverage of the reply classifier (``mailwarden.classify``).

* coverage: patterns and real samples per table (provider / reasons / internal / issuers) and per
  reason, and how many samples the whole classifier gets right (``explain --check`` logic);
* speed: classifications per second on a realistic stream (every table sample and every bounce
  diagnostic of the dev set, with IPs and ids varied per message the way a busy log varies
  them), warm cache, and with the cache defeated (every reply distinct), plus load time;
* memory: tracemalloc peak of loading the tables and of a filled cache.

Usage: ``.venv/bin/python bench/bench_classify.py [--quick] [--coverage]`` (``--coverage``: only
the table of pattern ids per provider and reason). Writes bench/out/classify.json.
``run()`` returns the same dict, for a runner.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.classify import Classifier  # noqa: E402
from mailwarden.classify.samples import check, owned_patterns  # noqa: E402
from mailwarden.classify.text import split_reply  # noqa: E402
from mailwarden.events import Reply  # noqa: E402

BOUNCES = ROOT / "tests" / "data" / "classify" / "bounces-expected.jsonl"


def coverage(c: Classifier) -> dict[str, Any]:
    tables: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"patterns": 0, "samples": 0, "ok": 0, "reasons": Counter(), "ids": {}}
    )
    per_reason: Counter[str] = Counter()
    for o in owned_patterns(c):
        t = tables[o.table]
        t["patterns"] += 1
        t["samples"] += len(o.samples)
        t["ok"] += sum(1 for s in o.samples if not check(c, o, s))
        t["reasons"][o.reason or "(inner)"] += 1
        t["ids"].setdefault(o.reason or "(inner)", []).append(o.id.split("/", 1)[1])
        per_reason[o.reason or "(inner)"] += 1
    out = {k: {**v, "reasons": dict(v["reasons"])} for k, v in sorted(tables.items())}
    return {"tables": out, "per_reason": dict(sorted(per_reason.items()))}


def corpus(c: Classifier, n: int, seed: int, *, unique: bool = True) -> list[tuple[Reply, str]]:
    """``n`` (reply, provider) pairs drawn from samples and bounces. ``unique``: a random IP and
    a random id in every reply (no two alike: the worst case); else IPs from a pool of 20 and no
    ids (a small sender's log, where the same reply repeats)."""
    base: list[tuple[str, str]] = []
    for o in owned_patterns(c):
        base += [(s.reply, o.provider) for s in o.samples]
    for line in BOUNCES.read_text().splitlines():
        r = json.loads(line)
        if r.get("diagnosticcode"):
            base.append((r["diagnosticcode"], ""))
    rnd = random.Random(seed)
    out = []
    for _ in range(n):
        text, prov = rnd.choice(base)
        if unique:
            ip = ".".join(str(rnd.randint(1, 223 if i == 0 else 254)) for i in range(4))
            text += f" id{rnd.getrandbits(40):x}q{rnd.randint(100, 999)}"
        else:
            ip = f"198.51.100.{rnd.randint(1, 20)}"
        text = text.replace("192.0.2.1", ip).replace("192.0.2.25", ip)
        code, enh, body = split_reply(text)
        out.append((Reply(code, enh, body, remote=True, raw=text), prov))
    return out


def speed(c: Classifier, items: list[tuple[Reply, str]]) -> dict[str, float]:
    t0 = time.perf_counter()
    for r, p in items:
        c.classify(r, provider=p)
    warm = time.perf_counter() - t0
    distinct = [
        (Reply(r.code, r.enhanced, f"{r.text} v{i}", remote=True), p)
        for i, (r, p) in enumerate(items[: max(1, len(items) // 10)])
    ]
    t0 = time.perf_counter()
    for r, p in distinct:
        c.classify(r, provider=p)
    cold = time.perf_counter() - t0
    return {
        "replies": len(items),
        "per_s_cached": len(items) / warm,
        "per_s_uncached": len(distinct) / cold,
        "us_per_reply_cached": warm / len(items) * 1e6,
        "us_per_reply_uncached": cold / len(distinct) * 1e6,
    }


def print_ids(cov: dict[str, Any]) -> None:
    """The coverage table: pattern ids per table and reason."""
    for name, t in cov["tables"].items():
        print(f"{name}:")
        for reason, ids in sorted(t["ids"].items()):
            print(f"  {reason:16} {', '.join(ids)}")


def run(quick: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    c = Classifier.load()
    load_s = time.perf_counter() - t0
    tracemalloc.start()
    Classifier.load()
    load_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    cov = coverage(c)
    items = corpus(c, 20_000 if quick else 300_000, seed=1)
    sp = speed(c, items)
    c_log = Classifier.load()
    log_items = corpus(c_log, len(items), seed=2, unique=False)
    t0 = time.perf_counter()
    for r, p in log_items:
        c_log.classify(r, provider=p)
    sp["per_s_log_like"] = len(log_items) / (time.perf_counter() - t0)
    tracemalloc.start()
    c2 = Classifier.load()
    for r, p in items[:70_000]:
        c2.classify(r, provider=p)
    cache_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {
        "load_s": load_s,
        "load_peak_mib": load_peak / 2**20,
        "filled_cache_peak_mib": cache_peak / 2**20,
        "speed": sp,
        "coverage": cov,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--coverage", action="store_true", help="only print pattern ids per table")
    args = ap.parse_args()
    if args.coverage:
        print_ids(coverage(Classifier.load()))
        return
    res = run(quick=args.quick)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "classify.json").write_text(json.dumps(res, indent=2))
    print(f"{'table':14} {'patterns':>8} {'samples':>8} {'ok':>5}  reasons")
    tot = Counter()
    for name, t in res["coverage"]["tables"].items():
        reasons = ", ".join(f"{k}:{v}" for k, v in sorted(t["reasons"].items()))
        print(f"{name:14} {t['patterns']:8} {t['samples']:8} {t['ok']:5}  {reasons}")
        tot.update({k: t[k] for k in ("patterns", "samples", "ok")})
    print(f"{'total':14} {tot['patterns']:8} {tot['samples']:8} {tot['ok']:5}")
    print(
        "patterns per reason:",
        ", ".join(f"{k}:{v}" for k, v in res["coverage"]["per_reason"].items()),
    )
    s = res["speed"]
    print(
        f"load {res['load_s'] * 1000:.0f} ms (peak {res['load_peak_mib']:.1f} MiB); "
        f"{s['replies']} replies: {s['per_s_cached']:,.0f}/s all-distinct "
        f"({s['us_per_reply_cached']:.1f} us), {s['per_s_uncached']:,.0f}/s uncached "
        f"({s['us_per_reply_uncached']:.0f} us), {s['per_s_log_like']:,.0f}/s log-like; "
        f"cache of 70k replies: peak "
        f"{res['filled_cache_peak_mib']:.1f} MiB"
    )


if __name__ == "__main__":
    main()
