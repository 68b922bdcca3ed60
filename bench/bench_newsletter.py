#!/usr/bin/env python3
"""The newsletter scenario, with and without mailwarden's breaker (needs root and Postfix).

A real Postfix instance (the test harness's: own config, queue and loopback address), fake
receivers behind real MX records on a loopback DNS server: Swisscom answers
``554 5.7.1 ... You are not allowed to send us mail`` at RCPT, Google and GMX accept. A
1,500-recipient newsletter (300 messages of 5 recipients, half through sendmail, half over
SMTP) goes out twice:

* **Postfix alone**: every Swisscom recipient is attempted and bounced (a bounce notice each);
* **with mailwarden** (``postfix setup`` + ``run``): the breaker trips on the first block reply.

Reported per run: RCPT attempts at the blocking MX after its first block reply, Swisscom
recipients bounced, bounce notices, recipients delivered to the accepting providers, the time
from the first block reply to the provider being parked, and the run's wall time.

Usage: ``sudo .venv/bin/python bench/bench_newsletter.py [--recipients 1500]``.
Writes bench/out/newsletter.json; ``run()`` returns the same dict.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

from fixtures.dns import DnsServer, free_dns_address  # noqa: E402
from fixtures.mail import make_message, sendmail, smtp_submit  # noqa: E402
from fixtures.postfix import PostfixInstance, make_instance, unavailable  # noqa: E402
from fixtures.slot import acquire_slot  # noqa: E402
from fixtures.smtp import REPLIES, FakeMXFactory, SmtpFleet, at_rcpt  # noqa: E402

DOMAINS = {
    "swisscom": ("bluewin.ch", "bluemail.ch"),
    "google": ("gmail.com", "googlemail.com"),
    "gmx": ("gmx.net", "gmx.de"),
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(pred: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _recipients(n: int) -> list[str]:
    order = [d for pair in zip(*DOMAINS.values(), strict=True) for d in pair]
    return [f"reader{i:05d}@{order[i % len(order)]}" for i in range(n)]


class _Mailwarden:
    def __init__(self, tmp: Path, pf: PostfixInstance, dns: str) -> None:
        self.port = _free_port()
        self.state = tmp / "state"
        cfg = tmp / "mailwarden.toml"
        cfg.write_text(
            f'state_dir = "{self.state}"\n[store]\nurl = "sqlite:///{tmp / "mw.db"}"\n'
            f'[log]\nfiles = ["{pf.log_path}"]\n[dns]\nnameservers = ["{dns}"]\ntimeout = 1.0\n'
            f'[breaker]\npostfix_config = "{pf.config_dir}"\nsocketmap_port = {self.port}\n'
            "poll = 0.1\n"
        )
        self.env = {**os.environ, "MAILWARDEN_CONFIG": str(cfg), "MAILWARDEN_ETC": str(tmp)}
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "mailwarden.cli", *args],
            env=self.env,
            check=False,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.cli("postfix", "setup")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mailwarden.cli", "run"],
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return True
            return False

        _wait(listening, 30)

    def parked(self, provider: str) -> bool:
        try:
            view = json.loads((self.state / "breaker-view.json").read_text())
        except (OSError, ValueError):
            return False
        return provider in view.get("providers", {})

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
        self.cli("postfix", "teardown")


def scenario(
    pf: PostfixInstance, fleet: SmtpFleet, slot: Any, dns: DnsServer, n: int, *, breaker: bool
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="mw-bench-nl-"))
    mw = _Mailwarden(tmp, pf, dns.address) if breaker else None
    factory = FakeMXFactory(fleet, slot, dns)
    try:
        if mw is not None:
            mw.start()
        swiss = factory.provider("swisscom", at_rcpt(REPLIES["swisscom/not-allowed"]))
        accepting = factory.provider("google") + factory.provider("gmx")
        mark = pf.log_size()
        stamps: dict[str, float] = {}
        stop = threading.Event()

        def watch() -> None:
            while not stop.is_set():
                now = time.monotonic()
                if "block" not in stamps and any(
                    c == 554 for m in swiss for _, c in m.rcpt_codes()
                ):
                    stamps["block"] = now
                if mw is not None and "parked" not in stamps and mw.parked("swisscom"):
                    stamps["parked"] = now
                time.sleep(0.005)

        th = threading.Thread(target=watch, daemon=True)
        th.start()
        rcpts = _recipients(n)
        t0 = time.monotonic()
        for k in range(0, n, 5):
            batch = rcpts[k : k + 5]
            msg = make_message("news@example.test", batch, subject=f"part {k // 5}")
            if (k // 5) % 2 == 0:
                sendmail(pf, msg, batch, sender="news@example.test")
            else:
                smtp_submit(pf, msg, batch, sender="news@example.test")
        want = sum(1 for a in rcpts if not a.endswith(DOMAINS["swisscom"]))
        _wait(lambda: sum(len(m.delivered_to()) for m in accepting) >= want, 300)
        wall = time.monotonic() - t0  # until every accepting recipient was delivered
        if mw is None:
            with contextlib.suppress(TimeoutError):
                pf.wait_until_quiet(timeout=60, settle=2.0)  # let every bounce happen
        else:
            time.sleep(3.0)  # parked mail keeps being retried (and re-parked): never quiet
        stop.set()
        th.join(5)
        codes = [c for m in swiss for c in m.rcpt_codes()]
        first = next((i for i, (_, c) in enumerate(codes) if c == 554), None)
        log = pf.log_lines(mark)
        swiss_rcpts = [a for a in rcpts if a.endswith(DOMAINS["swisscom"])]
        bounced = sum(
            1 for ln in log if "status=bounced" in ln and any(d in ln for d in DOMAINS["swisscom"])
        )
        return {
            "mailwarden": breaker,
            "recipients": n,
            "swisscom_recipients": len(swiss_rcpts),
            "swisscom_rcpt_attempts": len(codes),
            "attempts_after_first_block": (len(codes) - first - 1) if first is not None else 0,
            "swisscom_bounced": bounced,
            "bounce_notices": sum("sender non-delivery notification" in ln for ln in log),
            "accepting_delivered": sum(len(m.delivered_to()) for m in accepting),
            "accepting_expected": want,
            "block_to_parked_s": (
                round(stamps["parked"] - stamps["block"], 3)
                if "parked" in stamps and "block" in stamps
                else None
            ),
            "wall_s": round(wall, 1),
        }
    finally:
        if mw is not None:
            mw.stop()
        factory.cleanup()
        with contextlib.suppress(Exception):
            pf.purge()
        for f in ("mailwarden-setup.json", "mailwarden_status_filter"):
            (pf.config_dir / f).unlink(missing_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)


def run(n: int = 1500) -> dict[str, Any]:
    why = unavailable()
    if why:
        raise SystemExit(f"bench_newsletter: {why}")
    slot = acquire_slot()
    dns = DnsServer(free_dns_address())
    logs = Path(tempfile.mkdtemp(prefix="mw-bench-pf-"))
    pf = make_instance(slot, logs, dns.address)
    fleet = SmtpFleet().start()
    try:
        dns.start()
        pf.start()
        results = [
            scenario(pf, fleet, slot, dns, n, breaker=False),
            scenario(pf, fleet, slot, dns, n, breaker=True),
        ]
    finally:
        fleet.stop()
        pf.destroy()
        dns.stop()
        slot.close()
        shutil.rmtree(logs, ignore_errors=True)
    return {"results": results}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--recipients", type=int, default=1500)
    a = ap.parse_args()
    res = run(a.recipients)
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    (out / "newsletter.json").write_text(json.dumps(res, indent=1) + "\n")
    for r in res["results"]:
        who = "with mailwarden" if r["mailwarden"] else "Postfix alone  "
        print(
            f"{who}: {r['attempts_after_first_block']:4d} attempts at the blocking MX after its "
            f"first block reply, {r['swisscom_bounced']:4d}/{r['swisscom_recipients']} bounced, "
            f"{r['bounce_notices']} bounce notices, accepting providers "
            f"{r['accepting_delivered']}/{r['accepting_expected']}, block->parked "
            f"{r['block_to_parked_s']} s, {r['wall_s']} s"
        )


if __name__ == "__main__":
    main()
