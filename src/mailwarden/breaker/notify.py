"""Alert channels for breaker transitions: the log, a webhook (JSON POST) and mail to the admin.

A small interface (:class:`Notifier`: one ``send`` method) so later channels (the service
issue's) plug in. Sending never blocks or breaks the engine: :class:`Dispatcher` hands messages
to a background thread, and a failing channel is logged and counted, not raised. Alert mail goes
to the admin along a route the breaker never parks: the admin's address is always on the
socketmap's never-park list, and with ``mail_relay`` set it bypasses the local queue entirely.
"""

from __future__ import annotations

import json
import logging
import queue
import smtplib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import asdict
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Protocol

from mailwarden.breaker.machine import Transition
from mailwarden.breaker.rules import format_duration

log = logging.getLogger("mailwarden.breaker")


def describe(t: Transition) -> str:
    """Plain-language text of a transition, for people."""
    lines = [t.summary() + "."]
    if t.new == "open":
        if t.until is None:
            lines.append("It stays open until a person closes it (mailwarden breaker close).")
        else:
            lines.append(
                f"Mail to it is parked (kept in the queue, not bounced) for "
                f"{format_duration(t.until - t.ts)}, then a few probes go out."
            )
    elif t.new == "probing":
        lines.append("The pause is over: a few recipients go out as probes.")
    elif t.new == "closed":
        lines.append("Parked mail is released, paced.")
    elif t.new == "slowed":
        lines.append("Mail to it goes out slowly (throttled transport).")
    if t.reply:
        lines.append(f"Reply: {t.reply}")
    if t.issuer:
        lines.append(
            f"Issuer: {t.issuer}. Every receiver using this list refuses us until we are delisted."
        )
    if t.url:
        lines.append(f"More / delisting: {t.url}")
    if t.note:
        lines.append(f"Note: {t.note}")
    return "\n".join(lines)


def payload(t: Transition) -> dict[str, Any]:
    d = asdict(t)
    d["text"] = describe(t)
    d["event"] = "breaker.transition"
    return d


class Notifier(Protocol):
    """One alert channel."""

    name: str

    def send(self, t: Transition) -> None:
        """Deliver one alert; raise on failure (the dispatcher logs it)."""


class LogNotifier:
    name = "log"

    def send(self, t: Transition) -> None:
        level = logging.WARNING if t.new in ("open", "slowed") else logging.INFO
        log.log(level, "%s", describe(t).replace("\n", " | "))


class WebhookNotifier:
    """POST the transition as JSON."""

    name = "webhook"

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"webhook URL must be http(s): {url!r}")
        self.url = url
        self.timeout = timeout

    def send(self, t: Transition) -> None:
        body = json.dumps(payload(t)).encode()
        req = urllib.request.Request(
            self.url, data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            if resp.status >= 300:
                raise OSError(f"webhook answered {resp.status}")


class MailNotifier:
    """Mail the admin, through ``relay`` (host[:port], SMTP) or the local sendmail."""

    name = "mail"

    def __init__(
        self,
        to: str,
        *,
        relay: str = "",
        sender: str = "",
        sendmail: Iterable[str] = ("/usr/sbin/sendmail",),
        timeout: float = 10.0,
    ) -> None:
        self.to = to
        self.relay = relay
        self.sender = sender or "mailwarden@localhost"
        self.sendmail = list(sendmail)
        self.timeout = timeout

    def message(self, t: Transition) -> EmailMessage:
        m = EmailMessage()
        m["From"] = self.sender
        m["To"] = self.to
        m["Subject"] = f"[mailwarden] {t.provider}: breaker {t.new}"
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid("mailwarden")
        m["Auto-Submitted"] = "auto-generated"
        m.set_content(describe(t) + "\n")
        return m

    def send(self, t: Transition) -> None:
        msg = self.message(t)
        if self.relay:
            host, _, port = (
                self.relay.rpartition(":") if ":" in self.relay else (self.relay, "", "25")
            )
            with smtplib.SMTP(host or self.relay, int(port or 25), timeout=self.timeout) as s:
                s.send_message(msg)
            return
        p = subprocess.run(
            [*self.sendmail, "-i", "-f", self.sender, "--", self.to],
            input=msg.as_bytes(),
            capture_output=True,
            timeout=self.timeout,
        )
        if p.returncode != 0:
            raise OSError(f"sendmail exited {p.returncode}: {p.stderr.decode(errors='replace')}")


class Dispatcher:
    """Fan transitions out to every channel from a background thread."""

    def __init__(self, channels: Iterable[Notifier]) -> None:
        self.channels = list(channels)
        self.sent = 0
        self.failed = 0
        self._q: queue.Queue[Transition | None] = queue.Queue(maxsize=10_000)
        self._thread: threading.Thread | None = None

    def notify(self, transitions: Iterable[Transition]) -> None:
        for t in transitions:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="notify", daemon=True)
                self._thread.start()
            try:
                self._q.put_nowait(t)
            except queue.Full:
                self.failed += 1

    def _run(self) -> None:
        while True:
            t = self._q.get()
            if t is None:
                return
            for ch in self.channels:
                try:
                    ch.send(t)
                    self.sent += 1
                except Exception as exc:
                    self.failed += 1
                    log.warning("alert via %s failed: %s", ch.name, exc)

    def close(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (up to ``timeout``), then stop."""
        if self._thread is None:
            return
        self._q.put(None)
        self._thread.join(timeout)
        self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self._q.empty() and time.monotonic() < deadline:
            time.sleep(0.01)
