"""Decide the reason of one bounced recipient.

Two sources, in this order:

1. STRUCTURE, decided here: an ARF report is ``feedback``, an auto-reply ``vacation``,
   ``Action: delivered``/``2.x.x`` is ``delivered``, and the reasons a format parser read
   from the reporting MTA's own words (``expired`` for "retry timeout exceeded",
   ``mailererror`` for a failed pipe, ``hostunknown`` for qmail's "couldn't find any host"...).
2. TEXT, decided by the shared classifier (:mod:`mailwarden.classify`): the remote server's
   reply, its enhanced status code and the provider. This module holds the single call site.

When neither decides: a delayed action means ``expired``, a local delivery agent
(``X-Unix``) failure ``mailererror``, any other diagnostic ``onhold``, nothing ``undefined``
(Sisimai's fallbacks, so that results compare with it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailwarden.events import Classification, Reply, Scope
from mailwarden.sources.dsn.record import Rcpt

if TYPE_CHECKING:
    from mailwarden.classify import Classifier

#: Reasons a format may decide that the text classifier should still get a chance to refine
#: (Sisimai's "retry" set: the MTA's wording is generic).
REFINABLE = frozenset(
    {
        "undefined",
        "onhold",
        "systemerror",
        "securityerror",
        "networkerror",
        "hostunknown",
        "userunknown",
    }
)

#: Who is to blame, for the reasons decided here (the classifier returns its own scope).
STRUCTURAL_SCOPE: dict[str, Scope] = {
    "feedback": "ours",
    "vacation": "",
    "delivered": "",
    "expired": "transient",
    "mailererror": "recipient",
    "hasmoved": "recipient",
    "onhold": "transient",
    "systemfull": "transient",
    "systemerror": "transient",
    "networkerror": "transient",
    "hostunknown": "recipient",
    "userunknown": "recipient",
    "mailboxfull": "recipient",
    "suspend": "recipient",
    "notaccept": "recipient",
    "syntaxerror": "ours",
    "contenterror": "ours",
    "emailtoolarge": "ours",
    "rejected": "ours",
    "blocked": "ours",
    "filtered": "recipient",
    "securityerror": "ours",
    "policyviolation": "ours",
    "spamdetected": "ours",
    "virusdetected": "ours",
    "requireptr": "ours",
    "authfailure": "ours",
    "badreputation": "ours",
    "norelaying": "ours",
    "notcompliantrfc": "ours",
    "ratelimited": "transient",
    "undefined": "",
}


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str
    scope: Scope
    provider: str = ""
    issuer: str = ""
    url: str = ""


class TextClassifier:
    """The one place that asks the shared classifier (:class:`mailwarden.classify.Classifier`)."""

    def __init__(self, impl: Classifier | None = None) -> None:
        from mailwarden.classify import Classifier

        self.impl = impl if impl is not None else Classifier.load()

    def provider(self, host: str, recipient: str) -> str:
        """Provider of the refusing host, else of the recipient's domain (``""`` if none)."""
        if host:
            p = self.impl.provider_for_host(host)
            if p:
                return p
        return self.impl.provider_for_domain(recipient) if "@" in recipient else ""

    def classify(self, reply: Reply, *, dsn: str, status: str, provider: str) -> Classification:
        return self.impl.classify(reply, dsn=dsn, status=status, provider=provider)


#: Rule-id prefixes of classifications made from the codes alone (no phrase matched).
_CODE_RULES = frozenset({"", "status", "command", "subject", "code", "fallback", "local"})
#: Reasons a format decides from the MTA's wording that a matched remote phrase overrides.
_TEXT_WINS = frozenset({"expired"})
#: Stages before DATA: a refusal there cannot be a content filter.
_BEFORE_DATA = frozenset({"CONNECT", "EHLO", "HELO", "MAIL FROM", "RCPT TO"})


def decide(rec: Rcpt, reply: Reply, classifier: TextClassifier, provider: str) -> Verdict:
    """The reason for ``rec`` (see the module docstring for the order)."""
    if rec.feedback_type or rec.reason == "feedback":
        return Verdict("feedback", STRUCTURAL_SCOPE["feedback"], provider)
    if rec.reason == "vacation":
        return Verdict("vacation", "", provider)
    if rec.action == "delivered" or rec.status.startswith("2."):
        return Verdict("delivered", "", provider)
    hint = rec.reason
    if hint and ((hint not in REFINABLE and hint not in _TEXT_WINS) or not reply.remote):
        # the format's or the reporting MTA's own words decide; only a remote server's
        # reply may refine a generic one
        return Verdict(hint, STRUCTURAL_SCOPE.get(hint, ""), provider)

    if rec.action == "delayed":
        status = "deferred"
    elif rec.status.startswith("4.") or rec.status == "5.4.7":
        # a temporary failure reported as final: the MTA gave up retrying (queue lifetime);
        # 5.4.7 says so itself ("delivery time expired")
        status = "expired" if rec.action in ("failed", "") else "deferred"
    else:
        status = "bounced"
    c = classifier.classify(reply, dsn=rec.status, status=status, provider=provider)
    text_based = c.rule.split("/", 1)[0] not in _CODE_RULES
    if c.rule.startswith("reasons/userunknown+remap/") and (
        hint == "userunknown"
        or (c.rule.endswith("/userunknown-stage-unknown") and rec.spec.upper() not in ("", "SMTP"))
    ):
        # the format itself says the mailbox is unknown (Sisimai: UserUnknown.true() keeps a
        # reason the MTA module set), or the text is no SMTP reply (Diagnostic-Code: X-Postfix,
        # X-Unix ...: Sisimai applies no stage rule there): an unknown stage makes no filter
        reason = "userunknown"
    elif text_based:
        reason = c.reason
    elif hint:
        reason = hint  # the format's own reading beats a bare status-code guess
    elif c.reason not in ("", "undefined", "onhold") and c.rule != "status/expired":
        # (not the outcome echoed back: a final report of a 4.x.x failure is told "expired")
        reason = c.reason
    elif rec.action == "delayed":
        reason = "expired"
    elif rec.spec in ("X-UNIX", "X-POSTFIX") and rec.diagnostic:
        reason = "mailererror"
    elif rec.diagnostic:
        reason = "onhold"
    else:
        reason = "undefined"
    reason = _by_stage(reason, rec, text_based)
    scope = c.scope if reason == c.reason else STRUCTURAL_SCOPE.get(reason, "")
    return Verdict(reason, scope, c.provider or provider, c.issuer, c.url)


def _by_stage(reason: str, rec: Rcpt, text_based: bool) -> str:
    """What the SMTP stage of the refusal says (Sisimai's rule, structure not wording): a
    refusal of MAIL FROM that no phrase explains is a rejected sender. (An unknown user after
    DATA being a filter is a remap of the shared classifier.)"""
    if (
        rec.command == "MAIL FROM"
        and not text_based
        and reason in ("securityerror", "onhold", "undefined")
    ):
        return "rejected"
    return reason
