"""The test harness itself: an isolated real Postfix, fake receivers that answer as scripted,
submission as local users and over SMTP, and slots that keep concurrent sessions apart."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from fixtures.dns import DnsServer
from fixtures.mail import TEST_USER, ensure_user, make_message, sendmail, smtp_submit
from fixtures.postfix import PostfixInstance, make_instance, sweep_stale_instances
from fixtures.slot import Slot, acquire_slot
from fixtures.smtp import ACCEPT, REPLIES, Behaviour, FakeMXFactory, Reply, Rule, at_rcpt

TESTS = Path(__file__).resolve().parent.parent
SENDER = "bounces@example.test"


def _status_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " status=" in line]


def test_reply_renders_multiline_with_code_on_every_line() -> None:
    r = Reply(550, "first {peer}\nsecond\n https://x.example/?p=1", "5.7.1")
    assert r.render({"peer": "192.0.2.1"}) == (
        "550-5.7.1 first 192.0.2.1\r\n550-5.7.1 second\r\n550 5.7.1  https://x.example/?p=1"
    )
    assert Reply(554, "a\nb").render({}) == "554-a\r\n554 b"
    assert Reply(250, "keeps {unknown}").render({}) == "250 keeps {unknown}"
    assert Reply(221).render({}) == "221"


def test_behaviour_picks_the_first_matching_rule() -> None:
    b = Behaviour(
        rcpt=(Rule("^nouser", Reply(550)), Rule("@gmail", Reply(452))),
        data=(Rule("^spam", Reply(554)),),
    )
    assert b.rcpt_reply("NoUser1@gmail.com") == Reply(550)
    assert b.rcpt_reply("full@gmail.com") == Reply(452)
    assert b.rcpt_reply("x@other.example") is None
    assert b.data_reply(["a@x", "spam@x"]) == Reply(554)
    assert b.data_reply(["a@x"]) is None


def test_sessions_hold_distinct_slots_while_alive(mw_slot: Slot) -> None:
    """Another process (a concurrent pytest session) cannot take this session's slot."""
    code = "from fixtures.slot import acquire_slot; print(acquire_slot().index)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=TESTS,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
    ).stdout
    assert int(out) != mw_slot.index
    second = acquire_slot()  # a second lock in this very process: also another slot
    try:
        assert second.index != mw_slot.index
    finally:
        second.close()


def test_instance_runs_apart_from_the_machine_postfix(postfix: PostfixInstance) -> None:
    assert postfix.config_dir != Path("/etc/postfix")
    assert postfix.get("queue_directory") == str(postfix.queue_dir)
    assert postfix.get("inet_interfaces") == postfix.address
    assert postfix.master_pid() is not None
    started = [line for line in postfix.log_lines() if "daemon started" in line]
    assert started and started[-1].endswith(f"configuration {postfix.config_dir}")
    resolv = (postfix.queue_dir / "etc" / "resolv.conf").read_text()
    assert f"nameserver {postfix.nameserver}" in resolv
    # the machine's own instance is not running and its queue is not ours
    assert postfix.queue_dir != Path("/var/spool/postfix")
    assert not Path("/var/spool/postfix/pid/master.pid").exists() or (
        subprocess.run(["postfix", "status"], capture_output=True).returncode != 0
    )


def test_sendmail_as_local_users_logs_each_uid(
    postfix: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    mx = fake_mx.add("mx01.mail.icloud.com", domains=["icloud.com"])
    app = ensure_user()
    users = {"www-data": 33, "nobody": 65534, TEST_USER: app.pw_uid}
    for user in users:
        rcpt = f"{user}@icloud.com"
        msg = make_message(SENDER, [rcpt], message_id=f"<{user}.1@app.example.test>")
        sendmail(postfix, msg, [rcpt], sender=SENDER, user=user)
    # and one without a Message-ID: cleanup generates one
    sendmail(
        postfix,
        make_message(SENDER, ["anon@icloud.com"], message_id=False),
        ["anon@icloud.com"],
        sender=SENDER,
        user="www-data",
    )
    assert postfix.wait_until_quiet() == []
    log = "\n".join(postfix.test_log_lines())
    uids = [int(u) for u in re.findall(r"postfix/pickup\[\d+\]: \w+: uid=(\d+) from=<", log)]
    assert sorted(uids) == sorted([*users.values(), 33])
    assert sorted(mx.delivered_to()) == sorted(
        [f"{u}@icloud.com" for u in users] + ["anon@icloud.com"]
    )
    ids = {t.accepted_rcpts[0]: t.message_id for t in mx.delivered()}
    assert ids["nobody@icloud.com"] == "<nobody.1@app.example.test>"
    generated = ids["anon@icloud.com"]
    assert re.fullmatch(r"<\d{14}\.[0-9A-F]+@mail\.example\.test>", generated)
    assert f"message-id={generated}" in log


def test_smtp_submission_from_an_app_server_address(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, mw_slot: Slot
) -> None:
    app_ip = mw_slot.client_address(0)
    dns_server.add_host("app1.example.test", app_ip)
    mx = fake_mx.add("outlook-com.olc.protection.outlook.com", domains=["outlook.com"])
    try:
        rcpts = ["a@outlook.com", "b@outlook.com", "c@outlook.com"]
        refused = smtp_submit(
            postfix, make_message(SENDER, rcpts), rcpts, sender=SENDER, source_address=app_ip
        )
        assert refused == {}
        postfix.wait_until_quiet()
    finally:
        dns_server.remove("app1.example.test")
        dns_server.remove(f"{'.'.join(reversed(app_ip.split('.')))}.in-addr.arpa")
        dns_server.reload()
    log = postfix.test_log_lines()
    assert any(f"client=app1.example.test[{app_ip}]" in line for line in log)
    assert sorted(mx.delivered_to()) == rcpts
    # one message, three recipients in one SMTP transaction to the receiver
    assert [len(t.accepted_rcpts) for t in mx.delivered()] == [3]


def test_scripted_replies_reach_the_log_and_the_session_record(
    postfix: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    gmx = fake_mx.add(
        "mx00.emig.gmx.net", Behaviour(greeting=REPLIES["gmx/blocklisted"]), domains=["gmx.net"]
    )
    yahoo = fake_mx.add(
        "mta5.am0.yahoodns.net", at_rcpt(REPLIES["yahoo/tss04"]), domains=["yahoo.com"]
    )
    fake_mx.add("mx.example.test", domains=["example.test"])
    rcpts = ["u1@gmx.net", "u2@yahoo.com"]
    sendmail(postfix, make_message(SENDER, rcpts), rcpts, sender=SENDER, user="www-data")
    queue = postfix.wait_until_quiet()
    status = "\n".join(_status_lines(postfix.test_log_lines()))
    # a multi-line greeting is logged on one line, continuation prefixes inline
    assert (
        f"refused to talk to me: 554-gmx.net (mxgmx117) Nemesis ESMTP Service not available "
        f"554-No SMTP service 554-IP address is block listed. 554 For explanation visit "
        f"https://postmaster.gmx.net/en/case?c=r0201&i=ip&v={postfix.address}&r="
    ) in status
    assert (
        f"said: 421 4.7.0 [TSS04] Messages from {postfix.address} temporarily deferred"
    ) in status
    assert "(in reply to RCPT TO command)" in status
    # both recipients wait in the deferred queue with the reply as reason
    assert [m.queue_name for m in queue] == ["deferred"]
    reasons = {r.address: r.delay_reason for r in queue[0].recipients}
    assert "Nemesis" in reasons["u1@gmx.net"] and "[TSS04]" in reasons["u2@yahoo.com"]
    # what the receivers saw: the greeting refusal was followed by QUIT only; Yahoo closed
    assert [c for c, _ in gmx.sessions[0].dialogue] == ["CONNECT", "QUIT"]
    assert yahoo.rcpt_codes() == [("u2@yahoo.com", 421)]
    assert yahoo.sessions[0].dialogue[-1][0].startswith("RCPT")  # closed: no QUIT answered


def test_a_block_that_lifts_is_delivered_on_flush(
    postfix: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    mx = fake_mx.add(
        "mx01.swisscom.ch",
        at_rcpt(Reply(450, "Too many connections from {peer}, try later", "4.7.1")),
        domains=["bluewin.ch"],
    )
    sendmail(postfix, make_message(SENDER, ["anna@bluewin.ch"]), ["anna@bluewin.ch"], sender=SENDER)
    queue = postfix.wait_until_quiet()
    assert [(m.queue_name, m.recipients[0].address) for m in queue] == [
        ("deferred", "anna@bluewin.ch")
    ]
    assert f"Too many connections from {postfix.address}" in queue[0].recipients[0].delay_reason
    mx.behaviour = ACCEPT
    postfix.flush()
    sent = postfix.wait_for_status("anna@bluewin.ch", "sent")
    assert sent[0].qid == queue[0].queue_id and sent[0].relay.startswith("mx01.swisscom.ch[")
    assert postfix.wait_until_quiet() == []
    outcomes = [(s.qid, s.status, s.dsn) for s in postfix.statuses()]
    assert outcomes == [(sent[0].qid, "deferred", "4.7.1"), (sent[0].qid, "sent", "2.0.0")]
    assert mx.rcpt_codes() == [("anna@bluewin.ch", 450), ("anna@bluewin.ch", 250)]


def test_refused_connection_and_unknown_domain(
    postfix: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    down = fake_mx.add("mail.alpenrose-hotel.ch", domains=["alpenrose-hotel.ch"], listen=False)
    fake_mx.add("mx.example.test", domains=["example.test"])
    rcpts = ["info@alpenrose-hotel.ch", "someone@gmial.com"]
    sendmail(postfix, make_message(SENDER, rcpts), rcpts, sender=SENDER)
    postfix.wait_until_quiet()
    status = "\n".join(_status_lines(postfix.test_log_lines()))
    assert (
        "to=<info@alpenrose-hotel.ch>, relay=none" in status
        and f"status=deferred (connect to mail.alpenrose-hotel.ch[{down.address}]:25: "
        "Connection refused)"
        in status
    )
    assert re.search(
        r"to=<someone@gmial\.com>, relay=none, .*dsn=5\.4\.4, status=bounced "
        r"\(Host or domain name not found\. Name service error for name=gmial\.com",
        status,
    )
    assert down.connections == 0


def test_second_instance_on_another_slot_runs_alongside(
    postfix: PostfixInstance, fake_mx: FakeMXFactory, dns_server: DnsServer, tmp_path: Path
) -> None:
    """Two instances (as two concurrent sessions would have) share nothing but the receivers."""
    mx = fake_mx.add("mx.example.test", domains=["example.test"])
    slot = acquire_slot()
    other = make_instance(slot, tmp_path, dns_server.address)
    try:
        other.start()
        assert other.address != postfix.address and other.queue_dir != postfix.queue_dir
        sendmail(other, make_message(SENDER, ["o@example.test"]), ["o@example.test"], sender=SENDER)
        sendmail(
            postfix, make_message(SENDER, ["p@example.test"]), ["p@example.test"], sender=SENDER
        )
        assert other.wait_until_quiet() == [] and postfix.wait_until_quiet() == []
        seen = {t.accepted_rcpts[0]: s.peer for s in mx.sessions for t in s.transactions}
        assert seen == {"o@example.test": other.address, "p@example.test": postfix.address}
        assert "p@example.test" not in other.log_text()
        assert "o@example.test" not in postfix.log_text(postfix.log_mark)
    finally:
        other.destroy()
        slot.close()
    assert not other.queue_dir.exists() and not other.config_dir.exists()
    addrs = subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    )
    assert f"{other.address}/32" not in addrs.stdout
    assert other.master_pid() is None


def test_isolated_use_restores_config_and_empties_the_queue(
    postfix_instance: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    """A test may reconfigure Postfix freely; the next test gets it back as it was. Here:
    a receiver slower to greet than smtp_helo_timeout."""
    pf = postfix_instance
    default_timeout = pf.get("smtp_helo_timeout")
    slow = fake_mx.add(
        "mx01.posteo.de",
        Behaviour(greeting=Reply(220, "{host} ESMTP", delay=3)),
        domains=["posteo.de"],
    )
    with pf.isolated():
        pf.postconf("smtp_helo_timeout = 1s", reload=True)
        sendmail(pf, make_message(SENDER, ["x@posteo.de"]), ["x@posteo.de"], sender=SENDER)
        pf.wait_for_log(
            r"to=<x@posteo\.de>, .*status=deferred \(conversation with mx01\.posteo\.de\[[\d.]+\] "
            r"timed out while receiving the initial server greeting\)",
            since=pf.log_mark,
        )
        assert [m.queue_name for m in pf.wait_until_quiet()] == ["deferred"]
    assert pf.get("smtp_helo_timeout") == default_timeout != "1s"
    assert pf.queue() == []
    assert slow.connections >= 1


def test_sweep_removes_what_a_killed_session_left(
    postfix_instance: PostfixInstance, dns_server: DnsServer, tmp_path: Path
) -> None:
    """A session killed with SIGKILL leaves its Postfix running: the next session stops it."""
    slot = acquire_slot()
    orphan = make_instance(slot, tmp_path, dns_server.address)
    try:
        orphan.start()
        pid = orphan.master_pid()
        assert pid is not None
    finally:
        slot.close()  # the "killed" session's lock goes away, its Postfix stays
    assert slot.index in sweep_stale_instances()
    assert orphan.master_pid() is None and not orphan.queue_dir.exists()
    assert not orphan.config_dir.exists() and not orphan._daemons()
    addrs = subprocess.run(
        ["ip", "-4", "addr", "show", "dev", "lo"], capture_output=True, text=True
    )
    assert f"{orphan.address}/32" not in addrs.stdout
    # the live session's own instance is untouched
    assert postfix_instance.master_pid() is not None


def test_starttls_when_the_receiver_offers_it(
    postfix: PostfixInstance, fake_mx: FakeMXFactory
) -> None:
    mx = fake_mx.add("mx01.mail.icloud.com", domains=["icloud.com"], tls=True)
    plain = fake_mx.add("mx.example.test", domains=["example.test"])
    for rcpt in ("t@icloud.com", "p@example.test"):
        sendmail(postfix, make_message(SENDER, [rcpt]), [rcpt], sender=SENDER)
    assert postfix.wait_until_quiet() == []
    log = "\n".join(postfix.test_log_lines())
    assert re.search(
        r"postfix/smtp\[\d+\]: Untrusted TLS connection established to "
        rf"mx01\.mail\.icloud\.com\[{re.escape(mx.address)}\]:25: TLSv1\.[23] with cipher ",
        log,
    )
    assert "TLS connection established to mx.example.test" not in log
    # EHLO again after STARTTLS, then the mail went through the encrypted session
    assert [c.split()[0] for c, _ in mx.sessions[0].dialogue].count("EHLO") == 2
    assert mx.delivered_to() == ["t@icloud.com"] and plain.delivered_to() == ["p@example.test"]
