"""trace on mail that really left this machine: through our Postfix, or around it.

The real Postfix instance delivers to a real SMTP receiver (aiosmtpd); the receiver's side of
the story is the Received line a receiving MTA writes from what it saw on the wire (the HELO
the client sent, the peer address, the PTR our DNS server gives for it). The "direct" case is
a script on our Postfix's own address talking straight to the MX, as a compromised web app
would. Our identity is detected from the instance's real ``postconf``.
"""

from __future__ import annotations

import re
import secrets
import smtplib
import subprocess
from email.utils import formatdate

import pytest

from fixtures.dns import DnsServer
from fixtures.mail import make_message, sendmail, smtp_submit
from fixtures.postfix import PostfixInstance
from fixtures.slot import Slot
from fixtures.smtp import FakeMX, FakeMXFactory, Transaction
from mailwarden.config import IdentitySettings, Settings
from mailwarden.forensics.run import trace_message
from mailwarden.identity import Identity, detect_identity

SENDER = "newsletter@app.example.test"


def _identity(postfix: PostfixInstance) -> Identity:
    me = detect_identity(
        IdentitySettings(), config_dir=str(postfix.config_dir), use_interfaces=False
    )
    assert postfix.address in me.ips and postfix.myhostname in me.helo_names
    return me


def _received_by(mx: FakeMX, tx: Transaction, dns: DnsServer) -> bytes:
    """The message as the receiver stores it: its own Received line on top (Postfix layout)."""
    session = next(s for s in mx.sessions if tx in s.transactions)
    try:
        ptr = str(dns.resolver().resolve_address(session.peer)[0].target).rstrip(".")
    except Exception:
        ptr = "unknown"
    line = (
        f"Received: from {session.helo} ({ptr} [{session.peer}])\r\n"
        f"\tby {mx.hostname} (Postfix) with ESMTP id {secrets.token_hex(5).upper()}\r\n"
        f"\tfor <{tx.accepted_rcpts[0]}>; {formatdate()}\r\n"
    )
    return line.encode() + tx.content


def _settings() -> Settings:
    return Settings()


def test_mail_through_pickup_is_ours_with_its_queue_id(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer
) -> None:
    mx = fake_mx.add("mx1.receiver-a.test", domains=["receiver-a.test"])
    mid = f"<{secrets.token_hex(6)}@app.example.test>"
    sendmail(
        postfix,
        make_message(SENDER, ["x@receiver-a.test"], message_id=mid),
        ["x@receiver-a.test"],
        sender=SENDER,
        user="www-data",
    )
    assert postfix.wait_until_quiet() == []
    qid = postfix.wait_for_log(rf"(\w+): message-id={re.escape(mid)}", since=postfix.log_mark)[0][1]
    eml = _received_by(mx, mx.delivered()[0], dns_server)

    report, _ = trace_message(eml, _settings(), identity=_identity(postfix), use_store=False)

    v = report.verdict
    assert v.kind == "postfix", v
    assert v.queue_id == qid
    assert v.boundary == 1
    assert report.hops[0].ours_from and not report.hops[0].ours_by
    assert report.hops[1].ours_by and not report.hops[1].hop.parsed  # Postfix's pickup line
    assert any("is our MTA's HELO name" in e for e in v.evidence)
    assert report.message_id == mid


def test_mail_through_smtpd_from_an_app_server_is_ours(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, mw_slot: Slot
) -> None:
    mx = fake_mx.add("mx1.receiver-b.test", domains=["receiver-b.test"])
    app_ip = mw_slot.client_address(1)
    smtp_submit(
        postfix,
        make_message(SENDER, ["y@receiver-b.test"]),
        ["y@receiver-b.test"],
        sender=SENDER,
        helo="app2.example.test",
        source_address=app_ip,
    )
    assert postfix.wait_until_quiet() == []
    qid = postfix.wait_for_log(
        rf"(\w+): client=\S*\[{re.escape(app_ip)}\]", since=postfix.log_mark
    )[0][1]
    eml = _received_by(mx, mx.delivered()[0], dns_server)

    report, _ = trace_message(eml, _settings(), identity=_identity(postfix), use_store=False)

    assert report.verdict.kind == "postfix"
    assert report.verdict.queue_id == qid
    ours = report.hops[1]
    assert ours.ours_by and ours.hop.parsed
    assert (ours.hop.ip, ours.hop.helo, ours.hop.id) == (app_ip, "app2.example.test", qid)


def test_script_on_our_ip_talking_to_the_mx_is_direct(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer
) -> None:
    mx = fake_mx.add("mx1.receiver-c.test", domains=["receiver-c.test"])
    msg = make_message("support@mail.com", ["z@receiver-c.test"])
    # what a compromised web application does: its own SMTP client, from our address
    with smtplib.SMTP(
        mx.address, 25, local_hostname="mail.com", timeout=10, source_address=(postfix.address, 0)
    ) as s:
        s.sendmail("support@mail.com", ["z@receiver-c.test"], msg)
    eml = _received_by(mx, mx.delivered()[0], dns_server)

    report, _ = trace_message(eml, _settings(), identity=_identity(postfix), use_store=False)

    v = report.verdict
    assert v.kind == "direct", v
    assert v.boundary == 1 and len(report.hops) == 1
    hop = report.hops[0].hop
    assert (hop.helo, hop.ip) == ("mail.com", postfix.address)
    assert f"HELO mail.com is not our MTA's HELO ({postfix.myhostname})" in v.evidence
    assert any("no Received line below hop 1" in e for e in v.evidence)
    # nothing of this went through our Postfix's log
    assert not any("mail.com" in line for line in postfix.test_log_lines())


@pytest.mark.parametrize("helo", ["mail.com", "[127.0.0.9]"])
def test_foreign_helo_from_our_ip_is_never_called_postfix(
    postfix: PostfixInstance, helo: str
) -> None:
    eml = (
        f"Received: from {helo} ([{postfix.address}]) by mx.other.test with SMTP id X1;"
        f" {formatdate()}\r\n\r\n"
    ).encode()
    report, _ = trace_message(eml, _settings(), identity=_identity(postfix), use_store=False)
    assert report.verdict.kind == "direct"


def test_bulk_transport_with_its_own_address_and_helo_is_ours(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, mw_slot: Slot
) -> None:
    from fixtures.postfix import POSTCONF
    from mailwarden.forensics.run import our_identity

    bulk_ip = mw_slot.client_address(2)
    postfix.postconf_master("mwbulk/unix=mwbulk unix - - y - - smtp")
    subprocess.run(
        [
            str(POSTCONF),
            "-c",
            str(postfix.config_dir),
            "-P",
            "mwbulk/unix/smtp_helo_name=bulk.example.test",
            f"mwbulk/unix/smtp_bind_address={bulk_ip}",
        ],
        check=True,
    )
    postfix.postconf("default_transport=mwbulk", reload=True)
    mx = fake_mx.add("mx1.receiver-u.test", domains=["receiver-u.test"])
    sendmail(
        postfix, make_message(SENDER, ["u@receiver-u.test"]), ["u@receiver-u.test"], sender=SENDER
    )
    assert postfix.wait_until_quiet() == []
    session = mx.sessions[-1]
    assert (session.helo, session.peer) == ("bulk.example.test", bulk_ip)  # really went that way

    me = our_identity(Settings(), config_dir=str(postfix.config_dir))
    assert "bulk.example.test" in me.helo_names and bulk_ip in me.ips
    assert "master.cf" in me.sources["helo_names"]
    report, _ = trace_message(
        _received_by(mx, mx.delivered()[0], dns_server), Settings(), identity=me, use_store=False
    )
    assert report.verdict.kind == "postfix", report.verdict
    # without the master.cf overrides the same mail would look like a direct send
    plain = detect_identity(
        IdentitySettings(ips=[postfix.address], helo_names=[postfix.myhostname]),
        use_postconf=False,
        use_interfaces=False,
    )
    report, _ = trace_message(
        _received_by(mx, mx.delivered()[0], dns_server), Settings(), identity=plain, use_store=False
    )
    assert report.verdict.kind != "postfix"
