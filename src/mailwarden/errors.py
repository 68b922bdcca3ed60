"""Exception tree. Every error mailwarden raises on purpose derives from :class:`MailwardenError`.

::

    MailwardenError
    ├── ConfigError            bad /etc/mailwarden/mailwarden.toml or command-line option
    ├── TableError             a data table (providers/*.toml, reasons.toml, ...) is invalid
    ├── SourceError            a log or mail source cannot be read (names the file and offset)
    ├── StoreError             the database cannot be opened or written
    ├── ValidationError        a value from a log, a mail or DNS failed strict validation
    │                          before reaching a Postfix map or a firewall rule
    └── ActuatorError          postconf/postmap/postfix/nft/iptables failed

CLI exit codes (borg's convention): 0 ok, 1 warning (findings), 2 error.
"""

from __future__ import annotations


class MailwardenError(Exception):
    """Base class of every deliberate mailwarden error."""


class ConfigError(MailwardenError):
    """Invalid configuration."""


class TableError(MailwardenError):
    """A shipped or local data table is invalid."""


class SourceError(MailwardenError):
    """A source (log file, journal, mail) cannot be read."""

    def __init__(self, message: str, *, source: str = "", offset: int | None = None) -> None:
        where = source + (f" at offset {offset}" if offset is not None else "")
        super().__init__(f"{where}: {message}" if where else message)
        self.source = source
        self.offset = offset


class StoreError(MailwardenError):
    """The store cannot be opened or written."""


class ValidationError(MailwardenError):
    """Untrusted input failed strict validation."""


class ActuatorError(MailwardenError):
    """An external command that acts on the system failed."""


EXIT_OK = 0
EXIT_WARNING = 1
EXIT_ERROR = 2
