"""Parsers for MTAs whose bounce text does not follow the common layout of
:mod:`mailwarden.sources.dsn.text`."""

from __future__ import annotations

from mailwarden.sources.dsn.mime import Mail
from mailwarden.sources.dsn.record import Rcpt


def parse(mail: Mail, lines: list[str]) -> tuple[str, list[Rcpt]]:
    """(format name, records) of the first format that recognises ``mail``, else ("", [])."""
    return "", []
