"""relaytest against real SMTP servers on loopback: an aiosmtpd open relay (accepts every RCPT)
and a guarded one (accepts only its own domain), plus a closed port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailwarden.reputation.relaytest import findings, relaytest


class OpenRelay:
    def __init__(self) -> None:
        self.data_seen = 0

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_seen += 1
        return "250 queued"


class GuardedRelay(OpenRelay):
    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        # only the percent hack slips through, as on some historic relays
        if address.endswith("@guarded.test") and "%" not in address:
            return "250 OK"
        if "%" in address:
            return "250 OK"
        return "554 5.7.1 Relay access denied"


def _free_port(addr: str) -> int:
    s = socket.socket()
    s.bind((addr, 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[tuple[str, int, OpenRelay]]:
    handler = request.param()
    addr = "127.0.0.1"
    port = _free_port(addr)
    ctl = Controller(handler, hostname=addr, port=port)
    ctl.start()
    try:
        yield addr, port, handler
    finally:
        ctl.stop()


@pytest.mark.parametrize("server", [OpenRelay], indirect=True)
def test_open_relay_is_detected_without_sending_mail(server: tuple[str, int, OpenRelay]) -> None:
    host, port, handler = server
    res = relaytest(host, port, timeout=5)
    assert res.open_relay
    (f,) = findings(res)
    assert f.severity == "problem" and "OPEN RELAY" in f.title
    assert "RCPT TO:<relaytest@relaytest.mailwarden.invalid>" in f.evidence
    assert handler.data_seen == 0  # never DATA: nothing delivered


@pytest.mark.parametrize("server", [GuardedRelay], indirect=True)
def test_percent_hack_is_reported(server: tuple[str, int, OpenRelay]) -> None:
    host, port, _ = server
    res = relaytest(host, port, timeout=5)
    assert [p.note for p in res.relays] == ["percent hack"]


def test_unreachable_host_is_an_error_not_a_pass() -> None:
    port = _free_port("127.0.0.1")  # nothing listens there any more
    res = relaytest("127.0.0.1", port, timeout=2)
    (f,) = findings(res)
    assert f.severity == "error" and not res.open_relay


# -- against a real Postfix ------------------------------------------------------------------

postfix_tests = pytest.mark.postfix


@postfix_tests
def test_real_postfix_closed_then_opened(postfix, mw_slot) -> None:  # type: ignore[no-untyped-def]
    from mailwarden.reputation.postfix_audit import check_relay, load_config

    outsider = mw_slot.address(231)  # not in mynetworks
    postfix.postconf(f"mynetworks = {postfix.address}/32", reload=True)
    res = relaytest(postfix.address, postfix.port, timeout=10, source=outsider)
    assert res.connected and not res.open_relay, res.transcript
    assert any("Relay access denied" in line for line in res.transcript)
    assert check_relay(load_config(str(postfix.config_dir)))[0].severity == "ok"

    # Postfix refuses to start smtpd when no working reject_unauth_destination is left, so the
    # real-world open relay is a mynetworks that trusts everybody.
    postfix.postconf("mynetworks = 0.0.0.0/0", reload=True)
    res = relaytest(postfix.address, postfix.port, timeout=10, source=outsider)
    assert res.open_relay and findings(res)[0].severity == "problem"
    assert any(f.severity == "problem" for f in check_relay(load_config(str(postfix.config_dir))))
