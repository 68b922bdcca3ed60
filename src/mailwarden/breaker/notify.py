"""What a breaker transition means, in words for people (:func:`describe`).

Transitions are sent by the one alert path, :mod:`mailwarden.report.alerts` (``from_transition``
and the dispatcher of ``[alerts]``: channels, dedup, rate limits), whether ``mailwarden run``,
``mailwarden breaker open/close`` or the dashboard changed the breaker; this module only words
them. (The breaker's first channels lived here; ``[breaker] webhook_url/admin_mail/mail_relay``
are now read by :func:`mailwarden.report.channels.build_channels`.)
"""

from __future__ import annotations

from mailwarden.breaker.machine import Transition
from mailwarden.breaker.rules import format_duration


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
