"""End to end: real Postfix, real DNS, fake receivers of many providers -> the log it writes.

One module-scoped run of :mod:`scenario` (42 messages, 3 origins, 11 receiving organisations,
each failure shape Postfix produces), then assertions on what Postfix logged, what the
receivers saw and what stays queued. The expected outcome of every recipient comes from the
scenario's definition, not from a recorded log.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.dns import DnsServer, reverse_name
from fixtures.mail import TEST_USER, ensure_user
from fixtures.postfix import STATUS_RX, PostfixInstance, QueuedMessage
from fixtures.slot import Slot
from fixtures.smtp import FakeMXFactory, SmtpFleet

from . import scenario as sc


@dataclass
class Run:
    """What the scenario produced."""

    postfix: PostfixInstance
    world: sc.World
    subs: list[sc.Submission]
    app_ip: str
    lines: list[str]  # the scenario's slice of the Postfix log
    first_round: list[str]  # the lines up to the first quiet queue
    queue: list[QueuedMessage]  # what is still queued at the end
    log_file: Path
    relay_reply: tuple[int, str]  # what smtpd answered the outsider's relay attempt

    def statuses(self, lines: list[str] | None = None) -> list[re.Match[str]]:
        return [
            m for line in (self.lines if lines is None else lines) if (m := STATUS_RX.search(line))
        ]


@pytest.fixture(scope="module")
def run(
    postfix_instance: PostfixInstance,
    smtp_fleet: SmtpFleet,
    mw_slot: Slot,
    dns_server: DnsServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Run]:
    pf = postfix_instance
    ensure_user(TEST_USER)
    fake_mx = FakeMXFactory(smtp_fleet, mw_slot, dns_server)
    mark = pf.log_size()
    isolation = pf.isolated()  # main.cf changes (mynetworks) are undone afterwards
    isolation.__enter__()
    try:
        world = sc.build_world(fake_mx)
        app_ip = sc.publish_app_host(dns_server, mw_slot)
        sc.restrict_relay(pf, app_ip)
        subs = sc.plan_submissions()
        sc.submit(pf, subs, app_ip)
        relay_reply = sc.try_relay(pf, mw_slot.client_address(1))
        pf.wait_until_quiet(timeout=120, settle=1.5)
        first = pf.log_lines(mark)
        # The Yahoo/AOL block lifts; the admin flushes the queue.
        world.lift("yahoo")
        world.lift("aol")
        pf.flush()
        queue = pf.wait_until_quiet(timeout=120, settle=1.5)
        text = pf.log_text(mark)
        log_file = tmp_path_factory.mktemp("spine") / "postfix.log"
        log_file.write_text(text)
        if os.environ.get("MAILWARDEN_WRITE_SAMPLE"):
            from .sample import APP_UID, sanitize

            uids = {ensure_user(TEST_USER).pw_uid: APP_UID}
            Path(os.environ["MAILWARDEN_WRITE_SAMPLE"]).write_text(
                sanitize(text, pf, mw_slot, uids)
            )
        yield Run(pf, world, subs, app_ip, text.splitlines(), first, queue, log_file, relay_reply)
    finally:
        fake_mx.cleanup()
        dns_server.remove(sc.APP_HOST)
        dns_server.remove(reverse_name(mw_slot.client_address(0)))
        with contextlib.suppress(Exception):
            dns_server.reload()
        isolation.__exit__(None, None, None)


# ------------------------------------------------------------------------------------------
# the raw log: Postfix really did what the scenario says
# ------------------------------------------------------------------------------------------


def test_every_recipient_ends_as_its_receiver_decided(run: Run) -> None:
    final: dict[tuple[str, str], str] = {}
    for m in run.statuses():
        if m["rcpt"] != sc.BOUNCES:
            final[(m["qid"], m["rcpt"])] = m["status"]
    submitted = Counter(r for s in run.subs for r in s.recipients)
    got = Counter(rcpt for _, rcpt in final)
    assert got == submitted  # every recipient of every message has an outcome
    for rcpt in submitted:
        outcomes = {st for (_, r), st in final.items() if r == rcpt}
        assert outcomes == {sc.BY_ADDRESS[rcpt].fate}, rcpt
    # the blocks that lifted were deferred first
    first = {(m["qid"], m["rcpt"]): m["status"] for m in run.statuses(run.first_round)}
    lifted = [k for k in first if sc.BY_ADDRESS.get(k[1], None) and sc.BY_ADDRESS[k[1]].first]
    assert lifted and all(first[k] == "deferred" for k in lifted)


def test_relay_names_the_provider_mx_host(run: Run) -> None:
    """relay= names the MX that answered; when Postfix made no connection (relay=none: refused
    connection, or its own "delivery temporarily suspended" after earlier failures) the MX
    is quoted in the reason instead. Only the unknown domain has no host at all."""
    quoted = re.compile(r"(?:connect to |host )([\w.-]+)\[")
    for m in run.statuses():
        box = sc.BY_ADDRESS.get(m["rcpt"])
        if box is None:  # a bounce notification to our own domain
            assert m["relay"].startswith("mx.example.test[")
            continue
        if box.case == "nxdomain":
            assert m["relay"] == "none"
            continue
        if m["relay"] == "none":
            q = quoted.search(m["text"])
            assert q, m["text"]
            host = q[1]
        else:
            assert box.case != "refused", m[0]
            host = m["relay"].split("[", 1)[0]
        assert host in sc.provider_hosts(box.provider), (box, m[0])


def _texts(run: Run, case: str) -> list[str]:
    return [
        m["text"]
        for m in run.statuses()
        if sc.BY_ADDRESS.get(m["rcpt"], None) and sc.BY_ADDRESS[m["rcpt"]].case == case
    ]


def test_reply_shapes_as_postfix_logs_them(run: Run) -> None:
    ip = run.postfix.address
    swiss = _texts(run, "not-allowed")
    assert swiss and all(
        re.fullmatch(
            r"host mx01\.swisscom\.ch\[[\d.]+\] said: 554 5\.7\.1 Swisscom AG IP: "
            + re.escape(ip)
            + r", You are not allowed to send us mail\. .* \(in reply to RCPT TO command\)",
            t,
        )
        for t in swiss
    )
    yahoo = [t for t in _texts(run, "tss04-lifted") if "421" in t]
    assert yahoo and all(
        f"421 4.7.0 [TSS04] Messages from {ip} temporarily deferred" in t for t in yahoo
    )
    tonline = _texts(run, "greeting-block")
    assert any(
        re.search(
            r"mx0[01]\.t-online\.de\[[\d.]+\] refused to talk to me: 554 IP=" + re.escape(ip), t
        )
        for t in tonline
    )
    assert any("refused to talk to me: 554-gmx.net (mxgmx117) Nemesis ESMTP" in t for t in tonline)
    spam = _texts(run, "spamhaus")
    assert spam and all(
        f"554 5.7.1 Service unavailable; Client host [{ip}] blocked using zen.spamhaus.org; "
        f"https://www.spamhaus.org/query/ip/{ip} (in reply to RCPT TO command)" in t
        for t in spam
    )
    gmail_unsolicited = _texts(run, "unsolicited")
    assert gmail_unsolicited and all(
        re.search(
            r"said: 550-5\.7\.1 \[" + re.escape(ip) + r" +12\] Our system has detected that this "
            r"message is 550-5\.7\.1 likely unsolicited mail\. .* 550 5\.7\.1  "
            r"https://support\.google\.com/mail/\?p=UnsolicitedMessageError \w+ - gsmtp "
            r"\(in reply to end of DATA command\)$",
            t,
        )
        for t in gmail_unsolicited
    )
    assert all(
        "550-5.1.1 The email account that you tried to reach does not exist" in t
        for t in _texts(run, "no-such-user")
    )
    assert all(
        "452-4.2.2 The recipient's inbox is out of storage space" in t
        for t in _texts(run, "over-quota")
    )
    assert all(
        "550 5.5.0 Requested action not taken: mailbox unavailable" in t
        for t in _texts(run, "mailbox-unavailable")
    )
    assert all(
        re.fullmatch(r"connect to mail\.alpenrose-hotel\.ch\[[\d.]+\]:25: Connection refused", t)
        or t.startswith("delivery temporarily suspended: connect to mail.alpenrose-hotel.ch")
        for t in _texts(run, "refused")
    )
    assert all(
        t.startswith("Host or domain name not found. Name service error for name=gmial.com")
        for t in _texts(run, "nxdomain")
    )


def test_origins_are_logged_per_submitter(run: Run) -> None:
    pickup = Counter(
        int(u) for u in re.findall(r"postfix/pickup\[\d+\]: \w+: uid=(\d+) ", "\n".join(run.lines))
    )
    app_uid = ensure_user(TEST_USER).pw_uid
    want = Counter({33: 0, app_uid: 0})
    for s in run.subs:
        if s.via == "sendmail":
            want[33 if s.user == "www-data" else app_uid] += 1
    assert pickup == want
    clients = [line for line in run.lines if re.search(r"postfix/smtpd\[\d+\]: \w+: client=", line)]
    assert len(clients) == sum(1 for s in run.subs if s.via == "smtp")
    assert all(line.endswith(f"client={sc.APP_HOST}[{run.app_ip}]") for line in clients)


def test_outsider_relay_attempt_is_refused_inbound(run: Run, mw_slot: Slot) -> None:
    code, text = run.relay_reply
    assert code == 554 and "Relay access denied" in text
    ip = re.escape(mw_slot.client_address(1))
    rejects = [line for line in run.lines if "NOQUEUE: reject: RCPT from" in line]
    assert len(rejects) == 1
    assert re.search(
        rf"postfix/smtpd\[\d+\]: NOQUEUE: reject: RCPT from unknown\[{ip}\]: 554 5\.7\.1 "
        rf"<{re.escape(sc.RELAY_TARGET)}>: Relay access denied; from=<promo@cheap-meds\.example> "
        rf"to=<{re.escape(sc.RELAY_TARGET)}> proto=ESMTP helo=<\[{ip}\]>$",
        rejects[0],
    )
    assert not any(sc.RELAY_TARGET in line for line in run.lines if " status=" in line)


def test_message_ids_kept_or_generated(run: Run) -> None:
    logged = re.findall(
        r"postfix/cleanup\[\d+\]: (\w+): message-id=<([^>]*)>", "\n".join(run.lines)
    )
    ids = [mid for _, mid in logged]
    for s in run.subs:
        if isinstance(s.message_id, str):
            assert s.message_id.strip("<>") in ids
    generated = [
        (q, mid) for q, mid in logged if re.fullmatch(r"\d{14}\.[0-9A-F]+@mail\.example\.test", mid)
    ]
    # cleanup generates one for each message submitted without, and for each bounce notice
    notices = re.findall(r"sender non-delivery notification: (\w+)", "\n".join(run.lines))
    without = sum(1 for s in run.subs if s.message_id is False)
    assert len(generated) == without + len(notices)
    assert all(mid.split("@")[0].endswith("." + q) for q, mid in generated)


def test_receivers_saw_what_the_log_says(run: Run) -> None:
    w = run.world
    # a 5xx at RCPT is final: Postfix never tries the backup MX
    assert w.mx["swisscom"][1].connections == 0
    assert w.mx["posteo"][1].connections == 0
    assert all(t.data_code is None for m in w.mx["swisscom"] for t in m.transactions())
    # delivered recipients per provider = status=sent lines per provider
    sent = Counter(
        sc.BY_ADDRESS[m["rcpt"]].provider
        for m in run.statuses()
        if m["status"] == "sent" and m["rcpt"] in sc.BY_ADDRESS
    )
    seen = Counter(
        {p: len([a for mx in mxs for a in mx.delivered_to()]) for p, mxs in w.mx.items()}
    )
    assert +seen == +sent
    # every bounce notification reached our own MX with the null sender
    notices = re.findall(r"sender non-delivery notification: (\w+)", "\n".join(run.lines))
    assert w.own is not None
    dsns = [t for t in w.own.delivered() if t.mail_from == ""]
    assert (
        len(dsns)
        == len(notices)
        == len({m["qid"] for m in run.statuses() if m["status"] == "bounced"})
    )
    assert all(b"Content-Type: message/delivery-status" in t.content for t in dsns)


def test_only_the_deferred_recipients_stay_queued(run: Run) -> None:
    assert {m.queue_name for m in run.queue} == {"deferred"}
    queued = Counter(r.address for m in run.queue for r in m.recipients)
    want = Counter(r for s in run.subs for r in s.recipients if sc.BY_ADDRESS[r].fate == "deferred")
    assert queued == want
    reasons = {r.address: r.delay_reason for m in run.queue for r in m.recipients}
    assert "452-4.2.2" in reasons["peter.brunner@gmail.com"]
    assert "Connection refused" in reasons["info@alpenrose-hotel.ch"]


# ------------------------------------------------------------------------------------------
# mailwarden analyze --json on that log
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def report(run: Run, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    if importlib.util.find_spec("mailwarden.cli.analyze") is None:
        pytest.skip("mailwarden analyze is not in this tree yet")
    tmp = tmp_path_factory.mktemp("analyze")
    env = dict(os.environ, MAILWARDEN_ETC=str(tmp / "etc"), XDG_STATE_HOME=str(tmp / "state"))
    env.pop("MAILWARDEN_CONFIG", None)
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailwarden.cli",
            "analyze",
            "--json",
            "--db",
            f"sqlite:///{tmp / 'mailwarden.db'}",
            str(run.log_file),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert p.returncode in (0, 1), p.stderr
    out: dict[str, Any] = json.loads(p.stdout)
    return out


def _outcomes(run: Run) -> list[tuple[sc.Submission, sc.Mailbox]]:
    return [(s, sc.BY_ADDRESS[r]) for s in run.subs for r in s.recipients]


def test_analyze_reads_every_line(run: Run, report: dict[str, Any]) -> None:
    assert report["lines"]["total"] == len(run.lines)
    assert report["lines"]["unparsed"] == 0
    assert report["lines"]["parsed"] > 0


def test_analyze_counts_per_provider(run: Run, report: dict[str, Any]) -> None:
    want: dict[str, Counter[str]] = {}
    for _, box in _outcomes(run):
        c = want.setdefault(sc.PROVIDER_NAME[box.provider], Counter())
        c["recipients"] += 1
        c[{"sent": "delivered"}.get(box.fate, box.fate)] += 1
    notices = len(re.findall(r"sender non-delivery notification: ", "\n".join(run.lines)))
    want["example.test"] = Counter(recipients=notices, delivered=notices)  # our bounce notices
    got = {p["provider"]: p for p in report["providers"]}
    assert set(got) == set(want)
    for name, c in want.items():
        counts = {k: got[name][k] for k in ("recipients", "delivered", "deferred", "bounced")}
        assert counts == {k: c[k] for k in counts}, name


MX_REPLY_RX = re.compile(
    r"postfix/[\w/-]+\[\d+\]: (?P<qid>[0-9A-Za-z]+): "
    r"(?P<text>host \S+ (?:said|refused to talk to me): .*)$"
)


def _case_lines(run: Run, case: str) -> list[re.Match[str]]:
    v = sc.VERDICTS[case]
    return [
        m
        for m in run.statuses()
        if m["rcpt"] in sc.BY_ADDRESS
        and sc.BY_ADDRESS[m["rcpt"]].case == case
        and v.marker in m["text"]
        and not m["text"].startswith("delivery temporarily suspended")  # Postfix's own
    ]


@pytest.mark.parametrize("case", sorted(sc.VERDICTS))
def test_analyze_explains_each_rejection(run: Run, report: dict[str, Any], case: str) -> None:
    v = sc.VERDICTS[case]
    names = {sc.PROVIDER_NAME[b.provider] for b in sc.MAILBOXES if b.case == case}
    lines = _case_lines(run, case)
    assert lines, f"the scenario produced no {case} line"
    found = []
    for p in report["providers"]:
        if p["provider"] not in names:
            continue
        for r in p["rejections"]:
            if r["code"] == v.code and r["enhanced"] == v.enhanced and r["command"] == v.command:
                found.append(r)
    assert found, f"{case}: no rejection {v.code} {v.enhanced} at {v.command!r} under {names}"
    # Every reply counts: the recipients' status lines and the replies of the MX hosts smtp
    # gave up on before the last one (logged once per message, without a recipient).
    qids = {m["qid"] for m in lines}
    mx_lines = [
        m
        for line in run.lines
        if (m := MX_REPLY_RX.search(line)) and m["qid"] in qids and v.marker in m["text"]
    ]
    assert sum(r["count"] for r in found) == len(lines) + len(mx_lines)
    assert sum(r["mx_replies"] for r in found) == len(mx_lines)
    for r in found:
        assert r["reason"] in v.reasons and r["scope"] == v.scope, r
        assert r["issuer"] == v.issuer, r
        assert r["url"].startswith(v.url) if v.url else True, r
        assert r["cited_ip"] == (run.postfix.address if v.cites_us else ""), r
        assert r["sample"] and not re.search(r"\b\d{3}-\d\.\d{1,3}\.\d{1,3} ", r["sample"]), r
        if v.code is not None:
            assert r["sample"].startswith(str(v.code)), r


def test_analyze_names_each_origin(run: Run, report: dict[str, Any]) -> None:
    app_uid = ensure_user(TEST_USER).pw_uid
    want: dict[tuple[str, str, str], Counter[str]] = {}
    for s in run.subs:
        if s.via == "smtp":
            key = ("client", run.app_ip, sc.APP_HOST)
        elif s.user == "www-data":
            key = ("uid", "33", "www-data")
        else:
            key = ("uid", str(app_uid), TEST_USER)
        c = want.setdefault(key, Counter())
        c["messages"] += 1
        for r in s.recipients:
            fate = sc.BY_ADDRESS[r].fate
            c["recipients"] += 1
            c[{"sent": "delivered"}.get(fate, fate)] += 1
    got = {(o["kind"], o["id"], o["name"]): o for o in report["origins"] if o["kind"] != "bounce"}
    assert set(got) == set(want)
    for key, c in want.items():
        counts = {
            k: got[key][k] for k in ("messages", "recipients", "delivered", "deferred", "bounced")
        }
        assert counts == {k: c[k] for k in counts}, key
    notices = len(re.findall(r"sender non-delivery notification: ", "\n".join(run.lines)))
    assert [o["messages"] for o in report["origins"] if o["kind"] == "bounce"] == [notices]


def test_analyze_reports_the_relay_attempt_as_inbound(
    run: Run, report: dict[str, Any], mw_slot: Slot
) -> None:
    inbound = report["inbound_rejects"]
    assert inbound["total"] == 1
    [kind] = inbound["kinds"]
    assert (kind["action"], kind["stage"], kind["code"], kind["enhanced"]) == (
        "reject",
        "RCPT",
        554,
        "5.7.1",
    )
    assert [c["client"] for c in kind["top_clients"]] == [mw_slot.client_address(1)]
    assert "Relay access denied" in kind["sample"]
