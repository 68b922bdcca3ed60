#!/usr/bin/env python3
"""Benchmark the bounce parser (``mailwarden bounce``): messages per second over the sample
set, time and peak memory on large and hostile messages.

Usage:  .venv/bin/python bench/bench_dsn.py [--quick]
Writes bench/out/dsn.json and prints a table. ``run()`` returns the same dict, for a runner.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from mailwarden.sources.dsn import TextClassifier, parse_bounce  # noqa: E402

SAMPLES = ROOT / "tests" / "data" / "dsn" / "eml"

DSN = (
    b"--BB\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.org\n\n"
    b"Final-Recipient: rfc822; user@example.com\nAction: failed\nStatus: 5.1.1\n"
    b"Diagnostic-Code: smtp; 550 5.1.1 user unknown\n"
)
HEAD = (
    b"From: MAILER-DAEMON@example.org\nTo: me@example.net\nSubject: Undelivered Mail Returned to "
    b"Sender\nContent-Type: multipart/report; boundary=BB\n\n"
)


def _big(mb: int) -> bytes:
    line = b"A" * 76 + b"\n"
    body = b"--BB\nContent-Type: text/plain\n\n" + line * (mb * 1024 * 1024 // len(line))
    return HEAD + body + b"\n" + DSN + b"\n--BB--\n"


def _nested(levels: int) -> bytes:
    body = DSN.replace(b"--BB\n", b"")
    for i in range(levels):
        b = f"L{i}".encode()
        body = b"Content-Type: multipart/mixed; boundary=" + b + b"\n\n--" + b + b"\n" + body
    return HEAD.replace(b"boundary=BB", b"boundary=L%d" % (levels - 1)) + body


def _long_diagnostic() -> bytes:
    line = b"    host h.example [192.0.2.1]: 550 5.1.1 " + b"x" * 7000 + b"\n"
    return (
        HEAD.replace(b"multipart/report; boundary=BB", b"text/plain")
        + (b"  x@y.example\n" + line) * 150
    )


def _many_recipients(n: int) -> bytes:
    body = b"".join(
        b"  u%d@example.org\n    host mx.example.org [192.0.2.1]: 550 5.1.1 user unknown\n" % i
        for i in range(n)
    )
    return HEAD.replace(b"multipart/report; boundary=BB", b"text/plain") + body


def _measure(data: bytes, clf: TextClassifier, repeat: int = 1) -> dict[str, Any]:
    tracemalloc.start()
    t0 = time.perf_counter()
    n = 0
    for _ in range(repeat):
        try:
            n = len(parse_bounce(data, classifier=clf).recipients)
        except Exception as exc:  # a SourceError is a valid outcome for hostile input
            n = -1
            err = type(exc).__name__
        else:
            err = ""
    dt = (time.perf_counter() - t0) / repeat
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"seconds": round(dt, 4), "peak_mib": round(peak / 2**20, 1), "recipients": n,
            "error": err}  # fmt: skip


def run(quick: bool = False) -> dict[str, Any]:
    clf = TextClassifier()
    files = sorted(SAMPLES.glob("*.eml"))
    blobs = [f.read_bytes() for f in files]
    rounds = 1 if quick else 5
    parse_bounce(blobs[0], classifier=clf)  # warm the classifier caches and imports
    t0 = time.perf_counter()
    count = 0
    for _ in range(rounds):
        for b in blobs:
            parse_bounce(b, classifier=clf)
            count += 1
    dt = time.perf_counter() - t0
    out: dict[str, Any] = {
        "samples": {"messages": count, "seconds": round(dt, 3), "per_second": round(count / dt)},
        "big_10mib_part": _measure(_big(10), clf),
        "nested_24_levels": _measure(_nested(24), clf),
        "nested_2000_levels": _measure(_nested(2000), clf),
        "diagnostic_1mib": _measure(_long_diagnostic(), clf),
        "recipients_5000": _measure(_many_recipients(5000), clf),
    }
    if not quick:
        out["big_60mib_part"] = _measure(_big(60), clf)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    res = run(ap.parse_args().quick)
    (ROOT / "bench" / "out").mkdir(parents=True, exist_ok=True)
    (ROOT / "bench" / "out" / "dsn.json").write_text(json.dumps(res, indent=2) + "\n")
    s = res["samples"]
    print(f"samples: {s['messages']} messages in {s['seconds']} s = {s['per_second']}/s")
    for k, v in res.items():
        if k != "samples":
            print(f"{k:20} {v['seconds']:8.3f} s  peak {v['peak_mib']:7.1f} MiB  "
                  f"recipients={v['recipients']} {v['error']}")  # fmt: skip


if __name__ == "__main__":
    main()
