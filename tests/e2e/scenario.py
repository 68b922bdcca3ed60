"""The spine scenario: a small but realistic day of outbound mail through a real Postfix.

A world of fake receivers (real provider MX names, real reply texts) and a list of mailboxes,
each with the fate the receiver gives it. Messages go out as the web server (``www-data``, via
sendmail), as a second local application (``mwtest-app``, via sendmail) and from an app
server over SMTP (``app1.example.test``), with and without Message-IDs, one to three
recipients each. Used by ``test_spine.py`` and reusable by any test that needs busy traffic.

What each receiver does (see :data:`fixtures.smtp.REPLIES`); all but the last two offer
STARTTLS, so the log has Postfix's TLS lines as production logs do:

* Google (gmail.com, googlemail.com, a Workspace domain on aspmx): accepts; one unknown user
  (550-5.1.1, multi-line), one mailbox out of storage (452-4.2.2, deferred), one recipient
  whose message is refused as unsolicited at end of DATA (550-5.7.1, multi-line);
* Swisscom (bluewin.ch, bluemail.ch): 554 5.7.1 "not allowed to send us mail" at RCPT;
* Yahoo and AOL (*.yahoodns.net): 421 4.7.0 [TSS04] at RCPT, then the block lifts;
* T-Online: 554 at the greeting; GMX: multi-line 554 at the greeting (no enhanced codes);
* Posteo: 554 5.7.1 "blocked using zen.spamhaus.org" with the Spamhaus lookup URL;
* Microsoft (outlook.com, hotmail.com, provider "outlook"): accepts; one gone mailbox (550 5.5.0);
* Apple (icloud.com, me.com): accepts;
* alpenrose-hotel.ch: its MX refuses connections; gmial.com: does not exist (NXDOMAIN);
* example.test (our own domain): accepts the bounce notifications Postfix sends back.

Postfix relays only for itself and the app server; a host outside tries to relay and is
refused by smtpd (an inbound reject, ``NOQUEUE: reject: RCPT ... Relay access denied``).
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from dataclasses import dataclass, field

from fixtures.dns import DnsServer
from fixtures.mail import TEST_USER, ensure_user, make_message, sendmail, smtp_submit
from fixtures.postfix import PostfixInstance
from fixtures.slot import Slot
from fixtures.smtp import ACCEPT, PROVIDERS, REPLIES, Behaviour, FakeMX, FakeMXFactory, Rule

BOUNCES = "bounces@example.test"
APP_HOST = "app1.example.test"


@dataclass(frozen=True)
class Mailbox:
    address: str
    provider: str  # key of PROVIDERS, or the receiving organisation for the odd ones
    fate: str  # final Postfix status: sent | deferred | bounced
    case: str  # what happens: ok, no-such-user, over-quota, unsolicited, ...
    first: str = ""  # status of the first attempt when it differs (a block that lifts)


MAILBOXES: tuple[Mailbox, ...] = (
    Mailbox("anna.meier@gmail.com", "google", "sent", "ok"),
    Mailbox("luca.rossi@gmail.com", "google", "sent", "ok"),
    Mailbox("sophie.martin@googlemail.com", "google", "sent", "ok"),
    Mailbox("jonas.keller@gmail.com", "google", "sent", "ok"),
    Mailbox("sandra.vogel@gmail.com", "google", "bounced", "no-such-user"),
    Mailbox("peter.brunner@gmail.com", "google", "deferred", "over-quota"),
    Mailbox("deals.hunter@gmail.com", "google", "bounced", "unsolicited"),
    Mailbox("info@alpenblick-bergbahnen.ch", "google-workspace", "sent", "ok"),
    Mailbox("marco@alpenblick-bergbahnen.ch", "google-workspace", "sent", "ok"),
    Mailbox("hans.muster@bluewin.ch", "swisscom", "bounced", "not-allowed"),
    Mailbox("ruth.schmid@bluewin.ch", "swisscom", "bounced", "not-allowed"),
    Mailbox("beat.frei@bluemail.ch", "swisscom", "bounced", "not-allowed"),
    Mailbox("mike.jones@yahoo.com", "yahoo", "sent", "tss04-lifted", first="deferred"),
    Mailbox("karen.lee@yahoo.com", "yahoo", "sent", "tss04-lifted", first="deferred"),
    Mailbox("jsmith@aol.com", "aol", "sent", "tss04-lifted", first="deferred"),
    Mailbox("klaus.fischer@t-online.de", "t-online", "deferred", "greeting-block"),
    Mailbox("monika.wagner@t-online.de", "t-online", "deferred", "greeting-block"),
    Mailbox("stefan.huber@gmx.net", "gmx", "deferred", "greeting-block"),
    Mailbox("lena.wolf@posteo.de", "posteo", "bounced", "spamhaus"),
    Mailbox("chris.taylor@outlook.com", "outlook", "sent", "ok"),
    Mailbox("emma.wilson@hotmail.com", "outlook", "sent", "ok"),
    Mailbox("old.account@hotmail.com", "outlook", "bounced", "mailbox-unavailable"),
    Mailbox("julia.schneider@icloud.com", "apple", "sent", "ok"),
    Mailbox("david.chen@me.com", "apple", "sent", "ok"),
    Mailbox("info@alpenrose-hotel.ch", "alpenrose-hotel.ch", "deferred", "refused"),
    Mailbox("maria.garcia@gmial.com", "gmial.com", "bounced", "nxdomain"),
)

BY_ADDRESS = {m.address: m for m in MAILBOXES}

#: The provider mailwarden should name for each receiver of the scenario: by MX suffix
#: (AOL is run by Yahoo on *.yahoodns.net; a Workspace domain is Google), else the MX host's
#: organisational domain, else (no DNS at all) the recipient domain.
PROVIDER_NAME: dict[str, str] = {
    "google": "google",
    "google-workspace": "google",
    "swisscom": "swisscom",
    "yahoo": "yahoo",
    "aol": "yahoo",
    "t-online": "t-online",
    "gmx": "gmx",
    "posteo": "posteo",
    "outlook": "outlook",
    "apple": "apple",
    "alpenrose-hotel.ch": "alpenrose-hotel.ch",
    "gmial.com": "gmial.com",
}


@dataclass(frozen=True)
class Verdict:
    """How a case's reply must be explained: reason (any of ``reasons``), who is to blame,
    the reply's codes and stage, the issuer and URL it names, and whether it cites our IP."""

    reasons: tuple[str, ...]
    scope: str
    code: int | None
    enhanced: str
    command: str
    marker: str  # text that identifies the case's log lines
    issuer: str = ""
    url: str = ""  # expected URL prefix ("" = none expected)
    cites_us: bool = False


VERDICTS: dict[str, Verdict] = {
    "no-such-user": Verdict(
        ("userunknown",),
        "recipient",
        550,
        "5.1.1",
        "RCPT TO",
        "550-5.1.1 The email account",
        url="https://support.google.com/mail/?p=NoSuchUser",
    ),
    "over-quota": Verdict(
        ("mailboxfull",),
        "recipient",
        452,
        "4.2.2",
        "RCPT TO",
        "452-4.2.2 The recipient's inbox",
        url="https://support.google.com/mail/?p=OverQuotaTemp",
    ),
    "unsolicited": Verdict(
        ("spamdetected",),
        "ours",
        550,
        "5.7.1",
        "end of DATA",
        "likely unsolicited mail",
        url="https://support.google.com/mail/?p=UnsolicitedMessageError",
        cites_us=True,
    ),
    "not-allowed": Verdict(
        ("blocked",),
        "ours",
        554,
        "5.7.1",
        "RCPT TO",
        "You are not allowed to send us mail",
        url="https://postmaster.bluewin.ch",
        cites_us=True,
    ),
    # Yahoo's TSS04 (volume or complaints): a throttle for our IP either way
    "tss04-lifted": Verdict(
        ("ratelimited", "badreputation"),
        "ours",
        421,
        "4.7.0",
        "RCPT TO",
        "[TSS04]",
        url="https://postmaster.yahooinc.com/error-codes",
        cites_us=True,
    ),
    "greeting-block": Verdict(
        ("blocked",), "ours", 554, "", "CONNECT", "refused to talk to me: 554", cites_us=True
    ),
    "spamhaus": Verdict(
        ("blocked",),
        "ours",
        554,
        "5.7.1",
        "RCPT TO",
        "blocked using zen.spamhaus.org",
        issuer="spamhaus",
        url="https://www.spamhaus.org/query/ip/",
        cites_us=True,
    ),
    "mailbox-unavailable": Verdict(
        ("userunknown",), "recipient", 550, "5.5.0", "RCPT TO", "mailbox unavailable"
    ),
    "refused": Verdict(
        ("networkerror",), "transient", None, "4.4.1", "CONNECT", "Connection refused"
    ),
    "nxdomain": Verdict(
        ("hostunknown",), "recipient", None, "5.4.4", "", "Host or domain name not found"
    ),
}


def _exact(*addresses: str) -> str:
    return "^(?:" + "|".join(re.escape(a) for a in addresses) + ")$"


def _of(case: str) -> list[str]:
    return [m.address for m in MAILBOXES if m.case == case]


@dataclass
class World:
    """The fake receivers of the scenario, by provider key."""

    mx: dict[str, list[FakeMX]] = field(default_factory=dict)
    own: FakeMX | None = None  # example.test: receives our bounce notifications

    def lift(self, provider: str) -> None:
        """The provider's block lifts: it accepts from now on."""
        for m in self.mx[provider]:
            m.behaviour = ACCEPT


def build_world(fake_mx: FakeMXFactory) -> World:
    """Start every fake receiver and publish the DNS of the scenario."""
    w = World()
    google = Behaviour(
        rcpt=(
            Rule(_exact(*_of("no-such-user")), REPLIES["google/no-such-user"]),
            Rule(_exact(*_of("over-quota")), REPLIES["google/over-quota"]),
        ),
        data=(Rule(_exact(*_of("unsolicited")), REPLIES["google/unsolicited"]),),
        accepted=REPLIES["google/accepted"],
    )
    outlook = Behaviour(
        rcpt=(Rule(_exact(*_of("mailbox-unavailable")), REPLIES["outlook/mailbox-unavailable"]),),
        accepted=REPLIES["outlook/accepted"],
    )
    plan: dict[str, Behaviour] = {
        "google": google,
        "google-workspace": Behaviour(accepted=REPLIES["google/accepted"]),
        "swisscom": Behaviour(rcpt=(Rule(".", REPLIES["swisscom/not-allowed"]),)),
        "yahoo": Behaviour(rcpt=(Rule(".", REPLIES["yahoo/tss04"]),)),
        "aol": Behaviour(rcpt=(Rule(".", REPLIES["yahoo/tss04"]),)),
        "t-online": Behaviour(greeting=REPLIES["t-online/bl"]),
        "gmx": Behaviour(greeting=REPLIES["gmx/blocklisted"]),
        "posteo": Behaviour(rcpt=(Rule(".", REPLIES["spamhaus/zen"]),)),
        "outlook": outlook,
        "apple": ACCEPT,
    }
    for name, behaviour in plan.items():  # the big receivers all offer STARTTLS
        w.mx[name] = fake_mx.provider(name, behaviour, publish=False, tls=True)
    w.mx["alpenrose-hotel.ch"] = [
        fake_mx.add(
            "mail.alpenrose-hotel.ch", domains=["alpenrose-hotel.ch"], listen=False, publish=False
        )
    ]
    w.own = fake_mx.add("mx.example.test", domains=["example.test"], publish=False)
    fake_mx.publish()
    return w


def provider_hosts(provider: str) -> set[str]:
    if provider in PROVIDERS:
        return {h for _, h in PROVIDERS[provider].mx}
    return {"mail.alpenrose-hotel.ch"} if provider == "alpenrose-hotel.ch" else set()


@dataclass(frozen=True)
class Submission:
    via: str  # "sendmail" | "smtp"
    user: str  # local user for sendmail, "" for SMTP
    sender: str  # header From
    recipients: tuple[str, ...]
    message_id: bool | str
    subject: str


def plan_submissions() -> list[Submission]:
    """42 messages: 20 from www-data, 10 from mwtest-app (sendmail), 12 over SMTP.

    Recipients cycle through :data:`MAILBOXES` so every mailbox gets mail; every fourth
    sendmail message and every third SMTP message has extra recipients. The recipient refused
    at end of DATA always travels alone (a DATA reply applies to the whole transaction)."""
    pool = [m.address for m in MAILBOXES if m.case != "unsolicited"]
    lone = _of("unsolicited")
    it: Iterator[int] = iter(range(10_000))

    def take(n: int) -> tuple[str, ...]:
        out: list[str] = []
        while len(out) < n:
            a = pool[next(it) % len(pool)]
            if a not in out:
                out.append(a)
        return tuple(out)

    subs: list[Submission] = []
    for i in range(20):
        rcpts = lone if i == 7 else take(2 if i % 4 == 3 else 1)
        subs.append(
            Submission(
                "sendmail",
                "www-data",
                "shop@example.test",
                tuple(rcpts),
                message_id=(i % 5 != 4),  # every fifth without: cleanup adds one
                subject=f"Your order {1000 + i}",
            )
        )
    for i in range(10):
        subs.append(
            Submission(
                "sendmail",
                TEST_USER,
                "noreply@example.test",
                take(1),
                message_id=f"<reset-{i}.{2000 + i}@accounts.example.test>" if i % 2 else False,
                subject="Password reset",
            )
        )
    for i in range(12):
        rcpts = lone if i == 5 else take(3 if i % 3 == 2 else 1)
        subs.append(
            Submission(
                "smtp",
                "",
                "news@example.test",
                tuple(rcpts),
                message_id=True,
                subject=f"Newsletter {i + 1}",
            )
        )
    return subs


def publish_app_host(dns: DnsServer, slot: Slot) -> str:
    """A PTR/A pair for the SMTP-submitting app server; returns its address."""
    ip = slot.client_address(0)
    dns.add_host(APP_HOST, ip)
    dns.reload()
    return ip


#: A host outside our networks trying to relay through us (refused by smtpd).
RELAY_TARGET = "list.buyer.0417@gmail.com"


def restrict_relay(postfix: PostfixInstance, app_ip: str) -> None:
    """Only Postfix itself and the app server may relay (as a careful admin sets it)."""
    postfix.postconf(f"mynetworks = {postfix.address}/32 {app_ip}/32", reload=True)


def try_relay(postfix: PostfixInstance, source_address: str) -> tuple[int, str]:
    """An outsider tries to relay: returns smtpd's reply to the RCPT."""
    msg = make_message("promo@cheap-meds.example", [RELAY_TARGET], subject="Offer")
    try:
        smtp_submit(
            postfix,
            msg,
            [RELAY_TARGET],
            sender="promo@cheap-meds.example",
            helo="[" + source_address + "]",
            source_address=source_address,
        )
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = exc.recipients[RELAY_TARGET]
        return code, text.decode()
    raise AssertionError("the relay attempt was accepted")


def submit(postfix: PostfixInstance, subs: list[Submission], app_ip: str) -> None:
    ensure_user(TEST_USER)
    for s in subs:
        msg = make_message(s.sender, s.recipients, subject=s.subject, message_id=s.message_id)
        if s.via == "sendmail":
            sendmail(postfix, msg, s.recipients, sender=BOUNCES, user=s.user)
        else:
            refused = smtp_submit(
                postfix, msg, s.recipients, sender=BOUNCES, helo=APP_HOST, source_address=app_ip
            )
            assert refused == {}, refused
