#!/usr/bin/env python3
"""Synthetic, format-faithful Postfix 3.7 log generator (copied from shared/tools/genlog.py; part
of the benchmark: bench/run.py generates its input with it).

Every line template below was copied from a real Postfix 3.7.11 run (Debian 12) against
fake loopback MX hosts (see ../notes/postfix.md and ../data/postfix/sample.log); only queue ids, pids,
addresses, sizes, delays and timestamps are varied.

Usage:  python3 genlog.py --lines 2000000 --out big.log [--iso] [--seed 1]
  --iso   RFC3339 timestamps as written by Debian 12's default rsyslog
          (2026-11-27T17:31:17.507827+00:00 vm postfix/smtp[...]) instead of the
          traditional/postlogd "Nov 27 17:31:17 mail postfix/smtp[...]" form.

Messages overlap in time (events are merged through a heap), so lines of different
queue ids interleave as in a real log; deferred recipients are retried later with a
new "(queue active)" line, and bounces create a DSN message with its own queue id.
"""

# ruff: noqa: E501  (line templates are real Postfix lines, kept whole to stay faithful)

import argparse
import heapq
import random
import string
import time

HOST = "mail"
SENDERS_SMTP = ["newsletter@example.test", "noreply@shop.example.test", "alerts@app.example.test"]
SENDERS_PICKUP = ["bounces@example.test", "www-data@mail.example.test"]

# provider -> (MX host list [(name, ip)], customer domains, behaviour weights)
PROVIDERS = {
    "swisscom": (
        [("mx01.swisscom.test", "127.0.25.2"), ("mx02.swisscom.test", "127.0.25.6")],
        ["bluewin.test", "bluemail.test", "swissonline.test"] + [f"kmu{i}.test" for i in range(40)],
        {"sent": 70, "block": 25, "nouser": 5},
    ),
    "accept": (
        [("mx.accept.test", "127.0.25.3")],
        ["gmail.test", "gmx.test", "example.test"] + [f"firma{i}.test" for i in range(300)],
        {"sent": 93, "nouser": 7},
    ),
    "ratelimit": (
        [("mx.ratelimit.test", "127.0.25.4")],
        ["yahoo.test", "ymail.test"],
        {"sent": 60, "ratelimit": 40},
    ),
    "greetblock": (
        [("mx.greetblock.test", "127.0.25.5")],
        ["t-online.test"],
        {"sent": 50, "greet554": 50},
    ),
    "orange": (
        [("mx.orange.test", "127.0.25.7")],
        ["orange.test", "wanadoo.test"],
        {"sent": 60, "greet421": 40},
    ),
    "down": ([("mx.down.test", "127.0.25.8")], ["down.test"], {"refused": 100}),
}
PROV_WEIGHTS = {
    "swisscom": 12,
    "accept": 70,
    "ratelimit": 6,
    "greetblock": 4,
    "orange": 4,
    "down": 1,
}
NXDOMAINS = ["nosuch-domain.test", "gmial.test", "hotmial.test"]

SWISSCOM = (
    "554 5.7.1 Swisscom AG IP: 127.0.0.1, You are not allowed to send us mail. "
    "Please refer to http://example.invalid/block if you feel this is in error."
)
RATELIMIT = (
    "421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to rate limit; "
    "see http://example.invalid/421"
)
GREET554 = (
    "554 IP=127.0.0.1 - A problem occurred. (Ask your postmaster for help or to contact "
    "tosa@example.invalid to clarify.)"
)
GREET421 = "421 4.7.0 mx.orange.test Too many connections from 127.0.0.1, try again later"
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
ALNUM = string.ascii_uppercase + string.digits


def fmt_delay(x):
    """Postfix prints delays with 2 significant digits (delay_logging_resolution_limit=2)."""
    # observed: delay=0.09, 0.1, 7.7, 8, 22; delays=0.03/0/0.01/0.03
    if x >= 10:
        return str(round(x))
    s = f"{x:.1f}" if x >= 1 else f"{x:.2f}"
    s = s.rstrip("0").rstrip(".")
    return s or "0"


class Gen:
    def __init__(self, rnd, iso):
        self.r, self.iso = rnd, iso
        self.heap, self.seq = [], 0
        self.used_qids = set()
        self.pids = {
            s: [rnd.randint(1000, 60000) for _ in range(n)]
            for s, n in [("smtp", 20), ("error", 4), ("cleanup", 3), ("bounce", 2), ("smtpd", 6)]
        }
        self.pid_qmgr, self.pid_pickup = rnd.randint(1000, 60000), rnd.randint(1000, 60000)

    def pid(self, svc):
        return self.r.choice(self.pids[svc])

    def qid(self, t):
        # short queue id: 5 hex digits from microseconds + inode-like hex digits (as Postfix does)
        while True:
            q = f"{int((t % 1) * 1e6) & 0xFFFFF:05X}{self.r.randint(0x100000, 0xFFFFFF):06X}"
            if q not in self.used_qids:
                self.used_qids.add(q)
                if len(self.used_qids) > 500000:
                    self.used_qids.clear()
                return q

    def emit(self, t, svc, pid, msg):
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, svc, pid, msg))

    def stamp(self, t):
        if self.iso:
            return (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
                + f".{int((t % 1) * 1e6):06d}+00:00"
            )
        g = time.gmtime(t)
        return (
            f"{MONTHS[g.tm_mon - 1]} {g.tm_mday:2d} {g.tm_hour:02d}:{g.tm_min:02d}:{g.tm_sec:02d}"
        )

    # --- one delivery attempt for one recipient -------------------------------------------
    def attempt(self, t, qid, rcpt, prov, t_arrival, final):
        r = self.r
        mxs, _, weights = PROVIDERS[prov] if prov else (None, None, None)
        d_a, d_b = r.uniform(0, 0.05), r.uniform(0, 0.05)
        d_c, d_d = r.uniform(0, 0.05), r.uniform(0, 0.08)
        delay = (t - t_arrival) + d_a + d_b + d_c + d_d
        delays = "/".join(fmt_delay(x) for x in ((t - t_arrival) + d_a, d_b, d_c, d_d))
        conn = f"conn_use={r.randint(2, 9)}, " if r.random() < 0.15 else ""
        if prov is None:  # NXDOMAIN
            self.emit(
                t,
                "smtp",
                self.pid("smtp"),
                f"{qid}: to=<{rcpt}>, relay=none, delay={fmt_delay(delay)}, delays={delays}, dsn=5.4.4, "
                f"status=bounced (Host or domain name not found. Name service error for "
                f"name={rcpt.split('@')[1]} type=A: Host not found)",
            )
            return "bounced"
        outcome = r.choices(list(weights), weights=list(weights.values()))[0]
        if final and outcome not in ("block", "nouser", "refused"):
            outcome = "sent"
        mxn, ip = mxs[0]
        relay = f"{mxn}[{ip}]:25"
        base = (
            f"{qid}: to=<{rcpt}>, relay={relay}, {conn}delay={fmt_delay(delay)}, delays={delays}, "
        )
        if outcome == "sent":
            q2 = "".join(r.choices(ALNUM, k=12))
            self.emit(
                t,
                "smtp",
                self.pid("smtp"),
                base + f"dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {q2})",
            )
            return "sent"
        if outcome == "block":
            # with smtp_delivery_status_filter the same reply is logged as dsn=4.7.1 status=deferred
            soft = r.random() < 0.3
            self.emit(
                t,
                "smtp",
                self.pid("smtp"),
                base
                + f"dsn={'4' if soft else '5'}.7.1, status={'deferred' if soft else 'bounced'} "
                f"(host {mxn}[{ip}] said: {SWISSCOM} (in reply to RCPT TO command))",
            )
            return "deferred" if soft else "bounced"
        if outcome == "nouser":
            self.emit(
                t,
                "smtp",
                self.pid("smtp"),
                base
                + f"dsn=5.1.1, status=bounced (host {mxn}[{ip}] said: 550 5.1.1 <{rcpt}>: Recipient address "
                f"rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))",
            )
            return "bounced"
        if outcome == "ratelimit":
            self.emit(
                t,
                "smtp",
                self.pid("smtp"),
                base
                + f"dsn=4.7.0, status=deferred (host {mxn}[{ip}] said: {RATELIMIT} (in reply to RCPT TO command))",
            )
            return "deferred"
        if outcome in ("greet554", "greet421"):
            if r.random() < 0.6:
                self.emit(
                    t,
                    "error",
                    self.pid("error"),
                    f"{qid}: to=<{rcpt}>, relay=none, delay={fmt_delay(delay)}, delays={delays}, "
                    f"dsn={'4.0.0' if outcome == 'greet554' else '4.7.0'}, status=deferred (delivery temporarily "
                    f"suspended: host {mxn}[{ip}] refused to talk to me: "
                    f"{GREET554 if outcome == 'greet554' else GREET421})",
                )
            else:
                self.emit(
                    t,
                    "smtp",
                    self.pid("smtp"),
                    base
                    + f"dsn={'4.0.0' if outcome == 'greet554' else '4.7.0'}, status=deferred (host {mxn}[{ip}] "
                    f"refused to talk to me: {GREET554 if outcome == 'greet554' else GREET421})",
                )
            return "deferred"
        # refused
        svc = "error" if r.random() < 0.7 else "smtp"
        pre = "delivery temporarily suspended: " if svc == "error" else ""
        self.emit(
            t,
            svc,
            self.pid(svc),
            f"{qid}: to=<{rcpt}>, relay=none, delay={fmt_delay(delay)}, "
            f"delays={delays}, dsn=4.4.1, status=deferred ({pre}connect to {mxn}[{ip}]:25: Connection refused)",
        )
        return "deferred"

    def pick_rcpt(self):
        r = self.r
        if r.random() < 0.01:
            return f"user{r.randint(1, 99999)}@{r.choice(NXDOMAINS)}", None
        prov = r.choices(list(PROV_WEIGHTS), weights=list(PROV_WEIGHTS.values()))[0]
        dom = r.choice(PROVIDERS[prov][1])
        return (
            f"{r.choice(['anna', 'beat', 'chris', 'dora', 'emil', 'frank'])}{r.randint(1, 999999)}@{dom}",
            prov,
        )

    # --- one message --------------------------------------------------------------------
    def message(self, t, sender=None, rcpts=None, dsn_for=None):
        r = self.r
        qid = self.qid(t)
        if dsn_for is None and r.random() < 0.04:  # smtpd reject at RCPT, nothing queued
            p = self.pid("smtpd")
            rc, _ = self.pick_rcpt()
            self.emit(t, "smtpd", p, "connect from unknown[127.0.25.1]")
            self.emit(
                t + 0.003,
                "smtpd",
                p,
                f"NOQUEUE: reject: RCPT from unknown[127.0.25.1]: 450 4.7.1 <{rc}>: "
                f"Recipient address rejected: circuit open for provider swisscom; from=<{SENDERS_SMTP[0]}> "
                f"to=<{rc}> proto=ESMTP helo=<app1.example.test>",
            )
            self.emit(
                t + 0.004,
                "smtpd",
                p,
                "disconnect from unknown[127.0.25.1] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4",
            )
            return
        if rcpts is None:
            rcpts = [self.pick_rcpt() for _ in range(2 if r.random() < 0.15 else 1)]
        size = r.randint(300, 60000)
        if dsn_for is not None:
            sender = ""
            self.emit(
                t,
                "cleanup",
                self.pid("cleanup"),
                f"{qid}: message-id=<{time.strftime('%Y%m%d%H%M%S', time.gmtime(t))}.{qid}@mail.example.test>",
            )
        elif r.random() < 0.5:
            sender = sender or r.choice(SENDERS_PICKUP)
            self.emit(
                t,
                "pickup",
                self.pid_pickup,
                f"{qid}: uid={r.choice([33, 33, 1000, 0])} from=<{sender}>",
            )
            self.emit(
                t + 0.002,
                "cleanup",
                self.pid("cleanup"),
                f"{qid}: message-id=<{r.randint(10**17, 10**18)}.{r.randint(1000, 99999)}.{r.randint(10**18, 10**19)}@app.example.test>",
            )
        else:
            sender = sender or r.choice(SENDERS_SMTP)
            p = self.pid("smtpd")
            self.emit(t - 0.004, "smtpd", p, "connect from unknown[127.0.25.1]")
            self.emit(t - 0.002, "smtpd", p, f"{qid}: client=unknown[127.0.25.1]")
            self.emit(
                t + 0.002,
                "cleanup",
                self.pid("cleanup"),
                f"{qid}: message-id=<{r.randint(10**17, 10**18)}.{r.randint(1000, 99999)}.{r.randint(10**18, 10**19)}@app.example.test>",
            )
            self.emit(
                t + 0.004,
                "smtpd",
                p,
                f"disconnect from unknown[127.0.25.1] ehlo=1 mail=1 rcpt={len(rcpts)} data=1 quit=1 commands={4 + len(rcpts)}",
            )
        t += 0.005
        bounced = []
        pending = list(rcpts)
        attempt_no = 0
        t_arrival = t
        while pending:
            self.emit(
                t,
                "qmgr",
                self.pid_qmgr,
                f"{qid}: from=<{sender}>, size={size}, nrcpt={len(rcpts)} (queue active)",
            )
            still = []
            for rc, prov in pending:
                ta = t + r.uniform(0.01, 0.12)
                res = self.attempt(ta, qid, rc, prov, t_arrival, final=attempt_no >= 3)
                if res == "deferred":
                    still.append((rc, prov))
                elif res == "bounced":
                    bounced.append(rc)
                t = max(t, ta)
            pending = still
            attempt_no += 1
            if pending:
                if (
                    attempt_no >= 4
                ):  # give up: expire (bounce_queue_lifetime shortened for the synthetic log)
                    t += 600
                    self.emit(
                        t,
                        "qmgr",
                        self.pid_qmgr,
                        f"{qid}: from=<{sender}>, status=expired, returned to sender",
                    )
                    bounced += [p[0] for p in pending]
                    break
                t += r.choice([60, 120, 240, 300]) * r.uniform(1, 1.2)
        if bounced and sender:
            bq_t = t + 0.01
            bq = self.qid(bq_t)
            self.emit(
                bq_t, "bounce", self.pid("bounce"), f"{qid}: sender non-delivery notification: {bq}"
            )
            self._dsn(bq_t, bq, sender)
        self.emit(t + 0.01, "qmgr", self.pid_qmgr, f"{qid}: removed")

    def _dsn(self, t, bq, sender):
        r = self.r
        self.emit(
            t - 0.002,
            "cleanup",
            self.pid("cleanup"),
            f"{bq}: message-id=<{time.strftime('%Y%m%d%H%M%S', time.gmtime(t))}.{bq}@mail.example.test>",
        )
        self.emit(
            t,
            "qmgr",
            self.pid_qmgr,
            f"{bq}: from=<>, size={r.randint(2400, 4000)}, nrcpt=1 (queue active)",
        )
        q2 = "".join(r.choices(ALNUM, k=12))
        self.emit(
            t + 0.02,
            "smtp",
            self.pid("smtp"),
            f"{bq}: to=<{sender}>, relay=mx.accept.test[127.0.25.3]:25, delay=0.01, "
            f"delays=0.01/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as {q2})",
        )
        self.emit(t + 0.03, "qmgr", self.pid_qmgr, f"{bq}: removed")

    def flush_until(self, out, t_limit, counter):
        h = self.heap
        n = 0
        while h and h[0][0] <= t_limit:
            t, _, svc, pid, msg = heapq.heappop(h)
            host = "vm" if self.iso else HOST
            out.write(f"{self.stamp(t)} {host} postfix/{svc}[{pid}]: {msg}\n")
            n += 1
        return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=2_000_000)
    ap.add_argument("--out", default="big.log")
    ap.add_argument("--iso", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--rate", type=float, default=3.0, help="messages per second (average); 3/s spans ~1 day"
    )
    a = ap.parse_args()
    r = random.Random(a.seed)
    g = Gen(r, a.iso)
    t = time.mktime((2026, 11, 20, 0, 0, 0, 0, 0, 0))
    written, nmsg = 0, 0
    with open(a.out, "w", buffering=1 << 20) as out:
        while written < a.lines:
            t += r.expovariate(a.rate)
            g.message(t)
            nmsg += 1
            if nmsg % 500 == 0:
                # safe: events not yet emitted all belong to messages that start at >= t - 0.004
                written += g.flush_until(out, t - 0.01, written)
            if r.random() < 0.0005:
                g.emit(
                    t,
                    "anvil",
                    4242,
                    "statistics: max connection rate 12/60s for (smtp:127.0.25.1) at "
                    + time.strftime("%b %e %H:%M:%S", time.gmtime(t - 60)),
                )
        written += g.flush_until(out, float("inf"), written)
    print(f"wrote {written} lines to {a.out}")


if __name__ == "__main__":
    main()
