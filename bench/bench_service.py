#!/usr/bin/env python3
"""The daemon (`mailwarden run`) as a real subprocess: catch-up speed on a big log, lag while
following a log written at a steady rate, memory, the size of the correlator snapshot.

Usage: .venv/bin/python bench/bench_service.py [--lines 200000] [--rate 2000] [--seconds 20]
Figures go to stdout and bench/out/service.json. SQLite store in bench/work/ (fresh per run).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
WORK = BENCH / "work"
OUT = BENCH / "out"


def checkpoint(url: str, source: str) -> tuple[int, int]:
    """(committed offset, bytes of the correlator snapshot) from the daemon's store."""
    from sqlalchemy import func, select

    from mailwarden.store.db import open_engine
    from mailwarden.store.service import service_checkpoints as t

    e = open_engine(url, create=False)
    try:
        with e.connect() as c:
            raw = c.execute(select(t.c.data).where(t.c.source == source)).scalar()
            snap = c.execute(
                select(func.length(t.c.data)).where(t.c.source == "#correlator")
            ).scalar()
    except Exception:
        return -1, 0
    finally:
        e.dispose()
    return (json.loads(raw)["offset"] if raw else -1), int(snap or 0)


def vm_hwm(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def start(tmp: Path, url: str, log: Path) -> subprocess.Popen[bytes]:
    cfg = tmp / "mw.toml"
    cfg.write_text(
        f'state_dir = "{tmp / "state"}"\n[store]\nurl = "{url}"\n'
        '[service]\ndnsbl_interval = 0\ndaily_report = ""\negress = false\nweb = false\n'
    )
    env = {**os.environ, "MAILWARDEN_CONFIG": str(cfg), "MAILWARDEN_ETC": str(tmp / "etc")}
    return subprocess.Popen(
        [sys.executable, "-m", "mailwarden.cli", "run", "--from-start", "--no-socketmap", str(log)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(tmp / "run.log").open("wb"),
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--rate", type=int, default=2000, help="lines/s while following")
    ap.add_argument("--seconds", type=int, default=20)
    a = ap.parse_args()
    WORK.mkdir(exist_ok=True)
    OUT.mkdir(exist_ok=True)
    big = WORK / f"service-{a.lines}.log"
    if not big.exists():
        subprocess.run(
            [
                sys.executable,
                str(BENCH / "genlog.py"),
                "--lines",
                str(a.lines),
                "--iso",
                "--seed",
                "5",
                "--out",
                str(big),
            ],
            check=True,
        )
    res: dict[str, object] = {"lines": a.lines, "bytes": big.stat().st_size}

    # 1. catch-up: the whole file from the start
    with tempfile.TemporaryDirectory(dir=WORK) as d:
        tmp = Path(d)
        url = f"sqlite:///{tmp / 'store.db'}"
        t0 = time.monotonic()
        p = start(tmp, url, big)
        size = big.stat().st_size
        peak = 0
        while True:
            off, snap = checkpoint(url, str(big))
            peak = max(peak, vm_hwm(p.pid))
            if off == size:
                break
            time.sleep(0.2)
        wall = time.monotonic() - t0
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        res["catchup_seconds"] = round(wall, 2)
        res["catchup_lines_per_s"] = round(a.lines / wall)
        res["catchup_peak_rss_mb"] = round(peak / 2**20, 1)
        res["snapshot_bytes_at_end"] = snap

    # 2. following a log written at a steady rate: commit lag per append
    lines = big.read_bytes().splitlines(keepends=True)[: a.rate * a.seconds]
    with tempfile.TemporaryDirectory(dir=WORK) as d:
        tmp = Path(d)
        url = f"sqlite:///{tmp / 'store.db'}"
        log = tmp / "mail.log"
        log.write_bytes(b"")
        p = start(tmp, url, log)
        time.sleep(3)
        lags: list[float] = []
        pending: list[tuple[int, float]] = []
        step = max(1, a.rate // 20)  # 20 appends a second
        with log.open("ab") as f:
            t_next = time.monotonic()
            for i in range(0, len(lines), step):
                f.write(b"".join(lines[i : i + step]))
                f.flush()
                pending.append((f.tell(), time.monotonic()))
                t_next += step / a.rate
                off, _ = checkpoint(url, str(log))
                now = time.monotonic()
                while pending and pending[0][0] <= off:
                    lags.append(now - pending.pop(0)[1])
                time.sleep(max(0.0, t_next - time.monotonic()))
        while pending:
            off, snap = checkpoint(url, str(log))
            now = time.monotonic()
            while pending and pending[0][0] <= off:
                lags.append(now - pending.pop(0)[1])
            time.sleep(0.02)
        rss = vm_hwm(p.pid)
        p.send_signal(signal.SIGTERM)
        p.wait(60)
        lags.sort()
        res["follow_rate_lines_per_s"] = a.rate
        res["follow_lag_p50_s"] = round(statistics.median(lags), 3)
        res["follow_lag_p95_s"] = round(lags[int(len(lags) * 0.95)], 3)
        res["follow_lag_max_s"] = round(lags[-1], 3)
        res["follow_peak_rss_mb"] = round(rss / 2**20, 1)
        res["follow_snapshot_bytes"] = snap
    # 3. the correlator snapshot with a big deferred queue (what each commit encodes)
    from mailwarden.events import Delivery, Message, Reply
    from mailwarden.service.snapshot import restore, snapshot
    from mailwarden.sources import Correlator

    for n in (1_000, 20_000):
        c = Correlator()
        for i in range(n):
            m = Message(
                "mail",
                f"Q{i:010X}",
                1_795_000_000.0 + i,
                "uid",
                uid=33,
                user="www-data",
                sender="news@example.test",
                message_id=f"<{i}@example.test>",
                size=4000,
                nrcpt=1,
            )
            for k in range(1):  # the daemon keeps only the last attempt of a written message
                r = Reply(
                    421,
                    "4.7.0",
                    "[TSS04] Messages from 192.0.2.25 temporarily deferred",
                    remote=True,
                    raw="421 4.7.0 [TSS04] ...",
                )
                m.attempts.append(
                    Delivery(
                        1_795_000_100.0 + i + k * 600,
                        "mail",
                        m.qid,
                        "postfix/smtp",
                        recipient=f"r{i}@yahoo.com",
                        relay_host="mta5.am0.yahoodns.net",
                        status="deferred",
                        dsn="4.7.0",
                        reply=r,
                    )
                )
            c._open[("mail", m.qid)] = [m, m.arrival, m.arrival]
        t0 = time.perf_counter()
        text = json.dumps(snapshot(c), separators=(",", ":"))
        t1 = time.perf_counter()
        restore(Correlator(), json.loads(text))
        t2 = time.perf_counter()
        res[f"snapshot_{n}_open_bytes"] = len(text)
        res[f"snapshot_{n}_open_encode_s"] = round(t1 - t0, 3)
        res[f"snapshot_{n}_open_restore_s"] = round(t2 - t1, 3)
    res["load"] = os.getloadavg()
    (OUT / "service.json").write_text(json.dumps(res, indent=1) + "\n")
    for k, v in res.items():
        print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
