"""Alert channels: mail to the admin, a webhook (generic JSON, Slack, Matrix), syslog, the log.

Each channel has a ``name`` and a ``send(alert)`` that raises on failure; deduplication, rate
limits and error accounting are the dispatcher's (:mod:`mailwarden.report.alerts`).

Mail takes a route the breaker never parks: with ``[alerts] smarthost`` it is submitted by SMTP
straight to that host (the local Postfix queue is not involved at all); without one it goes
through the local ``sendmail`` and the admin addresses are put on the breaker's never-park list
(the socketmap answers "not found" for them, so they take Postfix's normal transport even while
their provider is parked). See docs/service.md.
"""

from __future__ import annotations

import html
import json
import logging
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterable
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import TYPE_CHECKING

from mailwarden.errors import ConfigError

if TYPE_CHECKING:
    from mailwarden.config import Settings
    from mailwarden.report.alerts import Alert, Channel

log = logging.getLogger("mailwarden.alerts")

_SYSLOG_FACILITIES = {
    "kern": 0,
    "user": 1,
    "mail": 2,
    "daemon": 3,
    "auth": 4,
    "syslog": 5,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
_SYSLOG_SEVERITY = {"critical": 2, "warning": 4, "info": 6}


def one_line(text: str, limit: int = 900) -> str:
    """Control characters (CR, LF, NUL ...) folded to spaces: one safe line for syslog/headers."""
    s = "".join(c if c.isprintable() else " " for c in text)
    return " ".join(s.split())[:limit]


def _address(value: str, option: str) -> str:
    from mailwarden.errors import ValidationError
    from mailwarden.postfix.validate import address

    try:
        local, dom = address(value.strip())
    except ValidationError as exc:
        raise ConfigError(f"[alerts] {option}: {exc}") from exc
    return f"{local}@{dom}"


def _body_text(a: Alert) -> str:
    lines = [a.text or a.title]
    if a.links:
        lines.append("")
        lines += [f"{label}: {url}" for label, url in a.links]
    lines += ["", f"host: {a.host}  kind: {a.kind}  key: {a.key}"]
    return "\n".join(lines) + "\n"


def _body_html(a: Alert) -> str:
    """The HTML body of an alert without a rich one (``a.html``)."""
    links = "".join(
        f'<li><a href="{html.escape(u, quote=True)}">{html.escape(label)}</a></li>'
        for label, u in a.links
    )
    return f"<p><strong>{html.escape(a.title)}</strong></p><pre>{html.escape(a.text)}</pre>" + (
        f"<ul>{links}</ul>" if links else ""
    )


class LogChannel:
    """The daemon's own log (always on)."""

    name = "log"

    def send(self, a: Alert) -> None:
        level = {"critical": logging.ERROR, "warning": logging.WARNING}.get(
            a.severity, logging.INFO
        )
        log.log(
            level,
            one_line(a.title),
            extra={"alert": a.kind, "key": a.key, "severity": a.severity, "host": a.host},
        )


class MailChannel:
    """Mail to the admin through a smarthost (SMTP) or the local sendmail."""

    name = "mail"

    def __init__(
        self,
        to: Iterable[str],
        *,
        sender: str = "",
        smarthost: str = "",
        starttls: bool = False,
        sendmail: str = "/usr/sbin/sendmail",
        timeout: float = 15.0,
    ) -> None:
        self.to = [_address(t, "mail_to") for t in to]
        if not self.to:
            raise ConfigError("[alerts] mail_to is empty")
        if not sender:
            fqdn = socket.getfqdn()
            sender = f"mailwarden@{fqdn if '.' in fqdn else 'localhost.localdomain'}"
        self.sender = _address(sender, "mail_from")
        self.smarthost = smarthost
        self.starttls = starttls
        self.sendmail = sendmail
        self.timeout = timeout
        if smarthost:
            self._hostport()  # fail early on a bad value

    def _hostport(self) -> tuple[str, int]:
        v = self.smarthost.strip()
        if v.startswith("["):  # [2001:db8::1]:25 or [host]
            host, _, rest = v[1:].partition("]")
            port = rest.lstrip(":") or "25"
        elif v.count(":") == 1:
            host, port = v.split(":")
        else:
            host, port = v, "25"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"[alerts] smarthost {self.smarthost!r}: use host[:port]")
        return host, int(port)

    def message(self, a: Alert) -> EmailMessage:
        m = EmailMessage()
        m["From"] = self.sender
        m["To"] = ", ".join(self.to)
        prefix = "" if a.kind == "report" else f"[{a.severity}] "
        m["Subject"] = one_line(f"[mailwarden] {prefix}{a.host + ': ' if a.host else ''}{a.title}")
        m["Date"] = formatdate(localtime=False)
        m["Message-ID"] = make_msgid("mailwarden")
        m["Auto-Submitted"] = "auto-generated"
        m["X-Mailwarden-Alert"] = one_line(f"{a.kind} {a.key}", 400)
        m.set_content(_body_text(a))
        m.add_alternative(
            a.html if a.html else f"<!doctype html><html><body>{_body_html(a)}</body></html>",
            subtype="html",
        )
        return m

    def send(self, a: Alert) -> None:
        msg = self.message(a)
        if self.smarthost:
            host, port = self._hostport()
            with smtplib.SMTP(host, port, timeout=self.timeout) as s:
                if self.starttls:
                    s.starttls(context=ssl.create_default_context())
                s.send_message(msg, from_addr=self.sender, to_addrs=self.to)
            return
        p = subprocess.run(
            [self.sendmail, "-i", "-f", self.sender, "--", *self.to],
            input=msg.as_bytes(),
            capture_output=True,
            timeout=self.timeout,
            check=False,
        )
        if p.returncode != 0:
            raise OSError(f"sendmail exited {p.returncode}: {p.stderr.decode(errors='replace')}")


class WebhookChannel:
    """POST the alert as JSON: ``generic`` (our schema), ``slack`` (incoming webhook) or
    ``matrix`` (an ``m.room.message`` event; a Matrix client-server ``/send/`` URL gets a PUT
    with a fresh transaction id, anything else, e.g. a hookshot webhook, a POST)."""

    name = "webhook"

    def __init__(
        self, url: str, *, fmt: str = "generic", token: str = "", timeout: float = 10.0
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"[alerts] webhook_url must be http(s): {url!r}")
        if fmt not in ("generic", "slack", "matrix"):
            raise ConfigError(f"[alerts] webhook_format {fmt!r}: generic, slack or matrix")
        self.url = url
        self.fmt = fmt
        self.token = token
        self.timeout = timeout

    def payload(self, a: Alert) -> dict[str, object]:
        text = f"{a.title}\n{a.text}" if a.text and a.text != a.title else a.title
        links = "\n".join(f"{label}: {u}" for label, u in a.links)
        if self.fmt == "slack":
            mark = {"critical": ":red_circle:", "warning": ":warning:"}.get(a.severity, ":info:")
            blocks: list[dict[str, object]] = [
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": f"{mark} *{_slack(a.title)}*"},
                }
            ]
            if a.text:
                blocks.append(
                    {"type": "section", "text": {"type": "mrkdwn", "text": _slack(a.text)[:2900]}}
                )
            if a.links:
                blocks.append(
                    {
                        "type": "context",
                        "elements": [
                            {"type": "mrkdwn", "text": f"<{u}|{_slack(label)}>"}
                            for label, u in a.links[:10]
                        ],
                    }
                )
            return {"text": _slack(f"[{a.severity}] {a.title}"), "blocks": blocks}
        if self.fmt == "matrix":
            body = text + (f"\n{links}" if links else "")
            rich = _body_html(a) if not a.html else f"<p>{html.escape(a.title)}</p>"
            return {
                "msgtype": "m.text",
                "body": body,
                "format": "org.matrix.custom.html",
                "formatted_body": rich,
                # hookshot's generic webhooks read these two
                "text": body,
                "html": rich,
            }
        return {"event": "mailwarden.alert", **a.as_dict()}

    def send(self, a: Alert) -> None:
        body = json.dumps(self.payload(a), default=str).encode()
        url, method = self.url, "POST"
        if self.fmt == "matrix" and "/_matrix/client/" in url and "/send/" in url:
            url, method = f"{url.rstrip('/')}/{uuid.uuid4().hex}", "PUT"
        headers = {"Content-Type": "application/json", "User-Agent": "mailwarden"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(url, data=body, headers=headers, method=method)
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            resp.read(65536)
            if resp.status >= 300:
                raise OSError(f"webhook answered {resp.status}")


def _slack(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SyslogChannel:
    """One RFC 3164 line per alert to a unix datagram socket (``/dev/log``) or UDP host:port."""

    name = "syslog"

    def __init__(self, address: str = "/dev/log", facility: str = "daemon") -> None:
        if facility not in _SYSLOG_FACILITIES:
            raise ConfigError(
                f"[alerts] syslog_facility {facility!r}: one of {', '.join(_SYSLOG_FACILITIES)}"
            )
        self.facility = _SYSLOG_FACILITIES[facility]
        self.address = address
        if not address.startswith("/"):
            host, _, port = address.rpartition(":")
            if not host or not port.isdigit():
                raise ConfigError(f"[alerts] syslog_address {address!r}: a path or host:port")

    def line(self, a: Alert) -> bytes:
        pri = self.facility * 8 + _SYSLOG_SEVERITY.get(a.severity, 5)
        stamp = time.strftime("%b %d %H:%M:%S", time.localtime(a.ts))
        stamp = stamp[:4] + stamp[4:6].replace("0", " ", 1) + stamp[6:]
        host = one_line(a.host or socket.gethostname(), 64).replace(" ", "") or "-"
        msg = one_line(f"{a.kind} {a.severity}: {a.title} [key={a.key}]")
        import os

        return f"<{pri}>{stamp} {host} mailwarden[{os.getpid()}]: {msg}".encode()

    def send(self, a: Alert) -> None:
        data = self.line(a)
        if self.address.startswith("/"):
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
                s.connect(self.address)
                s.send(data)
            return
        host, _, port = self.address.rpartition(":")
        host = host.strip("[]")
        fam = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as s:
            s.sendto(data, (host, int(port)))


def mail_channel(settings: Settings) -> MailChannel | None:
    """The mail channel to the alert addresses (:func:`never_park`), None when there are none."""
    al, br = settings.alerts, settings.breaker
    mail_to = never_park(settings)
    if not mail_to:
        return None
    return MailChannel(
        mail_to,
        sender=al.mail_from,
        smarthost=al.smarthost or br.mail_relay,
        starttls=al.smarthost_starttls,
        sendmail=al.sendmail,
    )


def build_channels(settings: Settings) -> list[Channel]:
    """The channels the configuration asks for (``[alerts]``, plus the older
    ``[breaker] webhook_url/admin_mail/mail_relay`` and ``[egress] webhook`` when ``[alerts]``
    does not set its own)."""
    al, br = settings.alerts, settings.breaker
    out: list[Channel] = [LogChannel()]
    mail = mail_channel(settings)
    if mail is not None:
        out.append(mail)
    url = al.webhook_url or br.webhook_url or settings.egress.webhook
    if url:
        out.append(WebhookChannel(url, fmt=al.webhook_format, token=al.webhook_token))
    if al.syslog:
        out.append(SyslogChannel(al.syslog_address, al.syslog_facility))
    return out


def never_park(settings: Settings) -> list[str]:
    """Addresses alert mail goes to: they must never be parked by the breaker."""
    al, br = settings.alerts, settings.breaker
    return list(al.mail_to) or ([br.admin_mail] if br.admin_mail else [])
