"""trace with the mailwarden store: the Message-ID index of our MTA's log, and egress records.

The store is a real SQLite file written through the store's own writer (as ``analyze`` does);
queue id and Message-ID come from a real Postfix run. Egress records are rows of the real
``egress_events`` table as the egress collectors write them.
"""

from __future__ import annotations

import re
import secrets
import smtplib
import time
from pathlib import Path
from typing import Any

from fixtures.dns import DnsServer
from fixtures.mail import make_message, sendmail
from fixtures.postfix import PostfixInstance
from fixtures.smtp import FakeMXFactory
from mailwarden.config import IdentitySettings, Settings
from mailwarden.forensics.run import report_json, trace_message
from mailwarden.identity import Identity, detect_identity
from mailwarden.store.db import open_engine, write_transaction
from mailwarden.store.egress import egress_events
from mailwarden.store.ingest import Batch, Writer

from .test_trace_postfix import _identity, _received_by

OUR_IP = "94.130.34.42"


def _store(
    tmp_path: Path, messages: list[tuple[Any, ...]], egress: list[dict[str, Any]]
) -> Settings:
    settings = Settings(state_dir=tmp_path / "state")
    engine = open_engine(settings.db_url())
    with write_transaction(engine) as conn:
        w = Writer(conn)
        w.write(Batch(messages=messages))
        w.finish()
        if egress:
            conn.execute(egress_events.insert(), egress)
    engine.dispose()
    return settings


def _row(qid: str, arrival: float, message_id: str, host: str = "mail") -> tuple[Any, ...]:
    return (
        host,
        qid,
        arrival,
        "uid",
        "33",
        "www-data",
        "a@example.test",
        message_id,
        900,
        1,
        "",
        None,
        arrival + 1,
    )


def _me() -> Identity:
    return detect_identity(
        IdentitySettings(ips=[OUR_IP], helo_names=["mail.lotsearch.de"]),
        use_postconf=False,
        use_interfaces=False,
    )


def test_message_id_in_our_log_names_the_queue_id(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, tmp_path: Path
) -> None:
    mx = fake_mx.add("mx1.receiver-s.test", domains=["receiver-s.test"])
    mid = f"<{secrets.token_hex(6)}@app.example.test>"
    sendmail(
        postfix,
        make_message("a@app.example.test", ["s@receiver-s.test"], message_id=mid),
        ["s@receiver-s.test"],
        sender="a@app.example.test",
        user="www-data",
    )
    assert postfix.wait_until_quiet() == []
    qid = postfix.wait_for_log(rf"(\w+): message-id={re.escape(mid)}", since=postfix.log_mark)[0][1]
    settings = _store(tmp_path, [_row(qid, time.time(), mid.strip("<>"), "mwtest")], [])
    eml = _received_by(mx, mx.delivered()[0], dns_server)

    report, me = trace_message(eml, settings, identity=_identity(postfix))

    v = report.verdict
    assert (v.kind, v.queue_id, v.confidence) == ("postfix", qid, "high")
    assert v.summary == f"left through Postfix (queue id {qid})"
    assert any(f"queue id {qid} on mwtest" in e for e in v.evidence)
    assert report_json(report, me)["verdict"]["queue_id"] == qid


def test_direct_send_is_not_in_our_logs(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, tmp_path: Path
) -> None:
    mx = fake_mx.add("mx1.receiver-t.test", domains=["receiver-t.test"])
    with smtplib.SMTP(
        mx.address, 25, local_hostname="mail.com", timeout=10, source_address=(postfix.address, 0)
    ) as s:
        s.sendmail(
            "x@mail.com", ["t@receiver-t.test"], make_message("x@mail.com", ["t@receiver-t.test"])
        )
    now = time.time()
    # the store holds what Postfix sent around that time, but not this message
    settings = _store(tmp_path, [_row("4ABC", now - 30, "other@app.example.test")], [])
    eml = _received_by(mx, mx.delivered()[0], dns_server)

    report, _ = trace_message(eml, settings, identity=_identity(postfix))

    v = report.verdict
    assert (v.kind, v.confidence) == ("direct", "high")
    assert v.summary == "not in our MTA's logs: sent directly from this IP by another program"
    assert any("is not in our MTA's logs" in e for e in v.evidence)


def test_egress_record_names_the_program_that_connected(tmp_path: Path) -> None:
    ts = 1518490449.0  # the hop's date

    def conn(**kw: Any) -> dict[str, Any]:
        row = {
            "source": "ebpf",
            "family": 4,
            "saddr": OUR_IP,
            "daddr": "212.48.10.27",
            "dport": 25,
            "ts": ts,
            "uid": 33,
            "user": "www-data",
            "pid": 1,
            "comm": "",
            "exe": "",
            "mta": False,
            "allowed": True,
        }
        return {**row, **kw}

    settings = _store(
        tmp_path,
        [],
        [
            conn(ts=ts - 1, pid=4242, comm="php-fpm8.2", exe="/usr/sbin/php-fpm8.2"),
            conn(ts=ts - 99999, comm="old"),  # out of the window
            conn(saddr="192.0.2.1", comm="elsewhere"),  # another source address
        ],
    )
    eml = (
        b"Received: from mail.com ([94.130.34.42]) by smtp-27.iol.local with SMTP id X;"
        b" Tue, 13 Feb 2018 03:54:09 +0100\r\nMessage-ID: <m@mail.com>\r\n\r\n"
    )
    report, _ = trace_message(eml, settings, identity=_me())
    ev = report.verdict.evidence
    assert any("php-fpm8.2 (pid 4242, user www-data; NOT our MTA)" in e for e in ev), ev
    assert not any("old" in e or "elsewhere" in e for e in ev)
    assert (report.verdict.kind, report.verdict.confidence) == ("direct", "high")
