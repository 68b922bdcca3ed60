"""Alert channels against real receivers on loopback: an HTTP server for the webhook and an
aiosmtpd server for the admin mail."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from mailwarden.breaker.machine import Transition
from mailwarden.breaker.notify import Dispatcher, MailNotifier, WebhookNotifier, describe

T = Transition(
    ts=1795800000.0,
    provider="swisscom",
    ip="",
    old="closed",
    new="open",
    actor="rule",
    rule="default/blocklist",
    reply="554 5.7.1 Client host [192.0.2.1] blocked using zen.spamhaus.org",
    issuer="spamhaus",
    url="https://check.spamhaus.org/",
    until=1795807200.0,
    level=1,
)


def test_describe_says_what_happens_and_names_the_issuer() -> None:
    text = describe(T)
    assert "closed -> open by rule default/blocklist" in text
    assert "parked" in text and "2h" in text
    assert "spamhaus" in text and "Every receiver using this list" in text


def test_webhook_and_mail(tmp_path: Any) -> None:
    got: list[dict[str, Any]] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            n = int(self.headers["Content-Length"])
            got.append(json.loads(self.rfile.read(n)))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    http = HTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=http.serve_forever, daemon=True).start()

    mails: list[Any] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mails.append(envelope)
            return "250 OK"

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    smtp = Controller(Handler(), hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        d = Dispatcher(
            [
                WebhookNotifier(f"http://127.0.0.1:{http.server_port}/hook"),
                MailNotifier("admin@example.org", relay=f"127.0.0.1:{port}"),
            ]
        )
        d.notify([T])
        d.close(timeout=10)
        assert d.sent == 2 and d.failed == 0
        assert got[0]["provider"] == "swisscom" and got[0]["new"] == "open"
        assert got[0]["issuer"] == "spamhaus" and "text" in got[0]
        assert mails[0].rcpt_tos == ["admin@example.org"]
        body = mails[0].content.decode()
        assert "Subject: [mailwarden] swisscom: breaker open" in body
        assert "zen.spamhaus.org" in body
    finally:
        smtp.stop()
        http.shutdown()


def test_a_dead_channel_is_counted_not_raised() -> None:
    d = Dispatcher([WebhookNotifier("http://127.0.0.1:9/nothing-listens", timeout=1)])
    d.notify([T])
    d.close(timeout=10)
    assert d.failed == 1 and d.sent == 0


def test_webhook_url_must_be_http() -> None:
    with pytest.raises(ValueError):
        WebhookNotifier("file:///etc/passwd")
