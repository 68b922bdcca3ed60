"""Postfix 3.7 log lines for chosen origins, times and outcomes (formats copied from real logs in
tests/data/sources and /work/shared/data/postfix/sample.log), for detector and report tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

SWISSCOM_BLOCK = (
    "host mx01.swisscom.ch[192.0.2.2] said: 554 5.7.1 Swisscom AG IP: 192.0.2.25, You are not "
    "allowed to send us mail. Please refer to https://postmaster.bluewin.ch if you feel this is "
    "in error. (in reply to RCPT TO command)"
)


def _stamp(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="microseconds")


class LogWriter:
    """Postfix 3.7 lines (formats copied from tests/data/sources) for chosen origins."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.n = 0

    def message(self, ts: float, origin: str, rcpts: list[str], host: str = "mail") -> None:
        self.n += 1
        qid = f"{0x4A0000 + self.n:X}{self.n % 16:X}"
        s = _stamp(ts)
        if origin.startswith("sasl:"):
            user = origin[5:]
            self.lines.append(
                f"{s} {host} postfix/submission/smtpd[3301]: {qid}: client=laptop.example.net"
                f"[198.51.100.7]:52344, sasl_method=PLAIN, sasl_username={user}"
            )
        else:
            self.lines.append(
                f"{s} {host} postfix/pickup[1201]: {qid}: uid={origin[4:]} from=<www-data>"
            )
        self.lines.append(
            f"{s} {host} postfix/cleanup[1202]: {qid}: message-id=<{qid}@example.test>"
        )
        self.lines.append(
            f"{s} {host} postfix/qmgr[1203]: {qid}: from=<sender@example.test>, size=900, "
            f"nrcpt={len(rcpts)} (queue active)"
        )
        for r in rcpts:
            dom = r.split("@")[1]
            if dom in ("bluewin.ch", "bluemail.ch"):
                self.lines.append(
                    f"{_stamp(ts + 0.5)} {host} postfix/smtp[1204]: {qid}: to=<{r}>, "
                    "relay=mx01.swisscom.ch[192.0.2.2]:25, delay=0.5, delays=0/0/0.2/0.3, "
                    f"dsn=5.7.1, status=bounced ({SWISSCOM_BLOCK})"
                )
                continue
            self.lines.append(
                f"{_stamp(ts + 0.5)} {host} postfix/smtp[1204]: {qid}: to=<{r}>, relay=mx.{dom}"
                "[192.0.2.9]:25, delay=0.5, delays=0/0/0.2/0.3, dsn=2.0.0, "
                "status=sent (250 2.0.0 OK)"
            )
        self.lines.append(f"{_stamp(ts + 1)} {host} postfix/qmgr[1203]: {qid}: removed")

    def write(self, path: Path) -> None:
        path.write_text("\n".join(self.lines) + "\n")
