"""Counters of a parse run (:class:`ParseStats`): how many lines were read, understood, ignored,
not understood or not from Postfix, with a bounded set of sample lines that could not be read.

Every reader and parser in :mod:`mailwarden.sources` reports into one of these instead of
raising: a bad line is a number and maybe a sample, never an exception.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mailwarden.events import Unparsed

MAX_SAMPLE_CHARS = 2000
MAX_PROGRAMS = 1000


@dataclass(slots=True)
class ParseStats:
    """Line counters of one run. ``total == parsed + ignored + unparsed + foreign``."""

    total: int = 0  # lines seen
    parsed: int = 0  # Postfix lines that produced an event
    ignored: int = 0  # Postfix lines understood but not needed (connect, warnings, statistics)
    unparsed: int = 0  # lines that could not be read (see ``why``)
    foreign: int = 0  # well-formed syslog lines of other programs (see ``programs``)
    out_of_order: int = 0  # lines whose time is more than a second before the latest seen
    why: Counter[str] = field(default_factory=Counter)  # unparsed reason -> count
    programs: Counter[str] = field(default_factory=Counter)  # foreign program -> count
    samples: list[Unparsed] = field(default_factory=list)  # first unparsed lines, bounded
    max_samples: int = 50
    errors: list[str] = field(default_factory=list)  # source errors ("file at offset N: ...")
    errors_total: int = 0

    def error(self, message: str) -> None:
        """Record a source error (unreadable file, corrupt archive); the first 100 are kept."""
        self.errors_total += 1
        if len(self.errors) < 100:
            self.errors.append(message)

    def program(self, name: str, n: int = 1) -> None:
        """Count ``n`` lines of a foreign program (at most 1,000 names, the rest as "(other)")."""
        programs = self.programs
        if name in programs or len(programs) < MAX_PROGRAMS:
            programs[name] += n
        else:
            programs["(other)"] += n

    def unparsed_line(self, source: str, offset: int, line: bytes | str, why: str) -> Unparsed:
        """Count one unreadable line and keep it as a sample while there is room."""
        self.unparsed += 1
        self.why[why] += 1
        if isinstance(line, bytes):
            text = line[: MAX_SAMPLE_CHARS * 4].decode("utf-8", "replace")
        else:
            text = line
        text = text[:MAX_SAMPLE_CHARS].rstrip("\r\n")
        u = Unparsed(source=source, offset=offset, line=text, why=why)
        if len(self.samples) < self.max_samples:
            self.samples.append(u)
        return u

    def merge(self, other: ParseStats) -> None:
        """Add another run's counters (e.g. from a worker process) to this one."""
        self.total += other.total
        self.parsed += other.parsed
        self.ignored += other.ignored
        self.unparsed += other.unparsed
        self.foreign += other.foreign
        self.out_of_order += other.out_of_order
        self.why.update(other.why)
        for name, n in other.programs.items():
            self.program(name, n)
        self.errors_total += other.errors_total
        self.errors.extend(other.errors[: max(0, 100 - len(self.errors))])
        room = self.max_samples - len(self.samples)
        if room > 0:
            self.samples.extend(other.samples[:room])

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON reports."""
        return {
            "total": self.total,
            "parsed": self.parsed,
            "ignored": self.ignored,
            "unparsed": self.unparsed,
            "foreign": self.foreign,
            "out_of_order": self.out_of_order,
            "errors": list(self.errors),
            "errors_total": self.errors_total,
            "why": dict(self.why),
            "programs": dict(self.programs),
            "samples": [
                {"source": u.source, "offset": u.offset, "line": u.line, "why": u.why}
                for u in self.samples
            ],
        }
