"""Classify: SMTP replies -> reason/scope/issuer/URL/cited IP, relay hosts and domains -> providers.

All knowledge is data (``mailwarden/data/reasons.toml``, ``issuers.toml``,
``providers/*.toml``, overridable in ``/etc/mailwarden/``); this package only validates,
compiles and applies it.

Public API::

    from mailwarden.classify import Classifier

    c = Classifier.load(etc=None)            # TableError (naming the file) on a bad table
    c.provider_for_host("aspmx.l.google.com")        # -> "google"
    c.provider_for_host("mx00.example-hoster.de")    # -> "example-hoster.de" (PSL fallback)
    c.provider_for_domain("bob@googlemail.com")      # -> "google" (known hosted domains)
    c.classify(reply, dsn="5.7.1", status="deferred", provider="")  # -> Classification
    c.classify(None, text="550 5.1.1 <bob@example.org>: User unknown")
    c.breaker_marker                                  # "circuit open for provider"
    c.is_internal("delivery temporarily suspended: ...")   # -> True
    c.providers["google"].postmaster_url              # provider facts for reports

What the reply text cannot say comes from the caller: ``reply.command`` (the SMTP stage; an
unknown user refused after DATA, or at a stage nobody reported, is ``filtered`` as in Sisimai v5,
unless an X.1.1-type status says otherwise) and ``status`` (``"expired"`` for a final report of a
temporary failure given up on: a connect timeout there is ``expired``, a single ``deferred`` one
stays ``networkerror``). The bounce parser passes both; Postfix's log names the stage itself.
A blocklist zone no ``issuers.toml`` entry knows is reported by its organisational domain.

``Classification.rule`` names the deciding pattern: ``<provider>/<id>``, ``reasons/<id>``,
``internal/<id>``, ``issuers/<id>`` or a code fallback (``status/5.1.1``, ``subject/5.7``,
``command/CONNECT``, ``code/521``, ``fallback/onhold``), with ``+remap/<id>`` appended when the
stage or outcome changed the verdict. ``internal=True`` marks Postfix's or
mailwarden's own deferrals: never count those as provider rejections. ``provider`` is ``""``
when nothing is known (IP-literal relay, no host); otherwise a table name or an organisational
domain (see :meth:`Classifier.is_known_provider`).

Results are cached (LRU) on the normalised reply, so replies that differ only in IPs, ids and
addresses cost one classification; ``cited_ip`` and ``url`` are still taken from each reply.
"""

from mailwarden.classify.engine import Classifier

__all__ = ["Classifier"]
