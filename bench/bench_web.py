#!/usr/bin/env python3
"""Dashboard and /metrics on a big store: ``python bench/bench_web.py [--lines N] [--quick]``.

Builds (once, cached in ``bench/work/``) a store from a generated Postfix log spread over about
six days (``bench/genlog.py --rate 0.6``; 2,000,000 lines make some 400,000 delivery attempts),
imported with ``mailwarden analyze``, then times every page and a ``/metrics`` scrape through
the ASGI app in process (no network, so the figure is the app's: queries and templates),
fleet-wide and for one host, cold (first request) and warm (median of the next runs).

Results go to ``bench/out/web.json`` and are printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / "work"
OUT = BENCH / "out"
sys.path.insert(0, str(ROOT / "src"))

PAGES = [
    "/?days={days}",
    "/rejections?days={days}",
    "/rejections?days={days}&provider=google",
    "/origins?days={days}",
    "/egress?days={days}",
    "/search?q={qid}",
    "/search?q={rcpt}",
    "/message/{pk}",
    "/metrics",
]


def build_store(lines: int, rate: float) -> Path:
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / f"genlog-{lines}-s3-r{rate}.log"
    db = WORK / f"web-{lines}-r{rate}.db"
    if not log.exists():
        print(f"generating {log.name} ...", flush=True)
        tmp = log.with_suffix(".tmp")
        subprocess.run(
            [sys.executable, str(BENCH / "genlog.py"), "--lines", str(lines), "--seed", "3",
             "--rate", str(rate), "--out", str(tmp)],
            check=True,
        )  # fmt: skip
        tmp.rename(log)
    done = db.with_suffix(".ok")  # written after a complete import
    if not done.exists():
        print(f"importing into {db.name} ...", flush=True)
        t = time.perf_counter()
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
        subprocess.run(
            [str(ROOT / ".venv" / "bin" / "mailwarden"), "analyze", "--json", "--db",
             f"sqlite:///{db}", str(log)],
            check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        done.write_text(f"{time.perf_counter() - t:.0f}s\n")
        print(f"  imported in {time.perf_counter() - t:.0f}s", flush=True)
    return db


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument(
        "--rate", type=float, default=0.6, help="messages/s of the generated log (0.6: 6 days)"
    )
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="400,000 lines, 3 runs")
    args = ap.parse_args()
    if args.quick:
        args.lines, args.runs = 400_000, 3
    db = build_store(args.lines, args.rate)

    import tempfile

    from fastapi.testclient import TestClient
    from sqlalchemy import func, select

    from mailwarden.config import Settings
    from mailwarden.store import schema
    from mailwarden.store.db import open_engine
    from mailwarden.web.app import create_app
    from mailwarden.web.auth import Credentials

    url = f"sqlite:///{db}"
    engine = open_engine(url)
    a, m = schema.attempts, schema.messages
    with engine.connect() as c:
        n_att = c.execute(select(func.count()).select_from(a)).scalar_one()
        n_msg = c.execute(select(func.count()).select_from(m)).scalar_one()
        lo, hi = c.execute(select(func.min(a.c.ts), func.max(a.c.ts))).one()
        host = c.execute(select(m.c.host).limit(1)).scalar_one()
        pk, qid = c.execute(select(m.c.id, m.c.qid).order_by(m.c.id.desc()).limit(1)).one()
        rcpt = c.execute(select(a.c.recipient).where(a.c.message_pk == pk).limit(1)).scalar()
    span_days = max(1, int((hi - lo) / 86400) + 1)
    print(f"store: {n_att:,} attempts, {n_msg:,} messages over {span_days} days", flush=True)
    token = "bench-token-0123456789"
    settings = Settings.model_validate(
        {"state_dir": tempfile.mkdtemp(), "store": {"url": url}, "web": {"token": token}}
    )
    app = create_app(
        settings, engine=engine, health=lambda full: [], credentials=Credentials(token)
    )
    client = TestClient(app)
    r = client.get("/login")
    import re

    nonce = re.search(r'name="nonce" value="([^"]+)"', r.text)
    assert nonce
    client.post("/login", data={"secret": token, "nonce": nonce[1]}, follow_redirects=False)
    results = []
    for scope in ("", host):
        for days in (7, 30):
            for tpl in PAGES:
                path = tpl.format(days=days, qid=qid, rcpt=rcpt or "x", pk=pk)
                if days == 30 and "{days}" not in tpl:
                    continue
                if scope:
                    path += ("&" if "?" in path else "?") + f"host={scope}"
                times = []
                for _ in range(args.runs + 1):
                    t = time.perf_counter()
                    resp = client.get(path, headers={"accept": "text/html"})
                    times.append(time.perf_counter() - t)
                    assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
                row = {
                    "path": path,
                    "cold_ms": round(times[0] * 1000, 1),
                    "median_ms": round(statistics.median(times[1:]) * 1000, 1),
                    "max_ms": round(max(times[1:]) * 1000, 1),
                    "bytes": len(resp.content),
                }
                results.append(row)
                print(f"{row['median_ms']:8.1f} ms  (cold {row['cold_ms']:7.1f})  {path}",
                      flush=True)  # fmt: skip
    engine.dispose()
    OUT.mkdir(parents=True, exist_ok=True)
    doc = {
        "attempts": n_att,
        "messages": n_msg,
        "span_days": span_days,
        "lines": args.lines,
        "runs": args.runs,
        "pages": results,
    }
    (OUT / "web.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(f"worst median: {max(r['median_ms'] for r in results):.0f} ms -> bench/out/web.json")


if __name__ == "__main__":
    main()
