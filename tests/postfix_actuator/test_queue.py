"""Queue safety on a real Postfix: parked mail inventoried per provider, moved to hold before it
would expire, and released paced when the breaker closes (delivered exactly once)."""

from __future__ import annotations

import collections
import itertools
import time
from typing import Any

from fixtures.mail import make_message, sendmail
from mailwarden.classify import Classifier
from mailwarden.config import DnsSettings
from mailwarden.dnsutil import resolver
from mailwarden.postfix.control import Postfix
from mailwarden.postfix.mx import SyncMx
from mailwarden.postfix.queue import QueueActuator, postfix_time
from mailwarden.postfix.setup import Setup

MARKER = "circuit open for provider"


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.1)


def test_inventory_expiry_hold_and_paced_release(
    postfix: Any, fake_mx: Any, socketmap: Any, dns_server: Any
) -> None:
    swiss = fake_mx.provider("swisscom")  # it would accept: only the breaker keeps mail back
    google = fake_mx.provider("google")
    classifier = Classifier.load()
    m = socketmap({})
    assert m.server is not None
    m.server.policy.provider_for_host = classifier.provider_for_host
    m.publish({"swisscom": {"state": "open", "code": "4.7.1",
                            "reason": f"{MARKER} swisscom: test"}})  # fmt: skip
    pf = Postfix(postfix.config_dir)
    s = Setup(pf, socketmap_port=m.port)
    s.apply(s.plan())
    try:
        for i in range(6):
            rcpts = [f"p{i}@bluewin.ch", f"g{i}@gmail.com"]
            sendmail(postfix, make_message("app@example.test", rcpts), rcpts,
                     sender="app@example.test")  # fmt: skip
        wait(lambda: len(google[0].delivered_to()) + len(google[1].delivered_to()) == 6, 60,
             "gmail delivered")  # fmt: skip
        postfix.wait_for_log(f"status=deferred \\({MARKER} swisscom", since=postfix.log_mark,
                             count=6, timeout=30)  # fmt: skip
        assert sum(mx.connections for mx in swiss) == 0

        mx = SyncMx(resolver(DnsSettings(nameservers=[dns_server.address], port=dns_server.port)))
        q = QueueActuator(
            pf,
            lambda d: classifier.provider_for_host(mx.hosts(d)[0]) if mx.hosts(d) else "",
            marker=MARKER,
            hold_margin=0,
        )
        postfix.wait_until_quiet(timeout=30)
        inv = q.inventory()
        assert inv["swisscom"].parked == 6 and inv["swisscom"].held == 0
        assert "google" not in inv  # all delivered

        # Not close to expiry: nothing held. Lifetime shorter than the margin: all held.
        assert q.guard_expiry() == []
        q.hold_margin = postfix_time(pf.get_expanded("maximal_queue_lifetime")) + 60
        assert len(q.guard_expiry()) == 6
        inv = q.inventory()
        assert (inv["swisscom"].parked, inv["swisscom"].held) == (0, 6)
        postfix.flush()  # held mail never leaves, not even on a flush
        time.sleep(1.0)
        assert sum(mx.connections for mx in swiss) == 0

        # The breaker closes: paced release, 120 recipients/minute = batches of 4 every 2 s.
        m.publish({})
        sleeps: list[float] = []

        def sleep(sec: float) -> None:
            sleeps.append(sec)
            time.sleep(sec)

        t0 = time.monotonic()
        assert q.release("swisscom", rate_per_minute=120, sleep=sleep) == 6
        assert sleeps and abs(sleeps[0] - 2.0) < 0.01
        wait(lambda: sum(len(x.delivered_to()) for x in swiss) == 6, 60, "swisscom delivered")
        got = collections.Counter(a for x in swiss for a in x.delivered_to())
        assert set(got) == {f"p{i}@bluewin.ch" for i in range(6)} and max(got.values()) == 1
        assert time.monotonic() - t0 >= 2.0  # paced, not one flush
        assert not any("status=bounced" in ln for ln in postfix.test_log_lines())
    finally:
        s.teardown(s.teardown_plan())


def test_postfix_time_values() -> None:
    assert postfix_time("5d") == 5 * 86400
    assert postfix_time("3600s") == 3600
    assert postfix_time("7") == 7 * 86400
    assert postfix_time("2h", "s") == 7200


def test_slowed_provider_goes_through_the_throttled_clone(
    postfix: Any, fake_mx: Any, socketmap: Any
) -> None:
    from mailwarden.postfix.setup import SlowClone

    swiss = fake_mx.provider("swisscom")
    classifier = Classifier.load()
    m = socketmap({})
    assert m.server is not None
    m.server.policy.provider_for_host = classifier.provider_for_host
    pf = Postfix(postfix.config_dir)
    s = Setup(pf, socketmap_port=m.port, slow=[SlowClone(1, 1)])
    s.apply(s.plan())
    try:
        m.publish({"swisscom": {"state": "slowed", "transport": "mwslow1s1"}})
        for i in range(3):
            sendmail(postfix, make_message("app@example.test", [f"s{i}@bluewin.ch"]),
                     [f"s{i}@bluewin.ch"], sender="app@example.test")  # fmt: skip
        wait(lambda: sum(len(x.delivered_to()) for x in swiss) == 3, 60, "delivered slowly")
        sent = [ln for ln in postfix.test_log_lines() if "status=sent" in ln and "bluewin" in ln]
        assert len(sent) == 3 and all("postfix/mwslow1s1/smtp[" in ln for ln in sent)
        starts = sorted(sess.started for x in swiss for sess in x.sessions)
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert gaps and min(gaps) >= 0.8  # one delivery per second to the destination
    finally:
        s.teardown(s.teardown_plan())
