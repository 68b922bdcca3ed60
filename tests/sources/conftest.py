"""Fixtures of the sources tests: sample paths and a deterministic envelope (UTC, 2026)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailwarden.sources.syslog import Envelope

DATA = Path(__file__).resolve().parent.parent / "data" / "sources"
SAMPLE_LOG = DATA / "postfix-3.7-sample.log"
ANNOTATED = DATA / "postfix-lines.txt"
GENLOG = Path("/work/shared/tools/genlog.py")
REF_2026 = datetime(2026, 11, 28, tzinfo=UTC).timestamp()


def utc_env(source: str = "test", reference: float = REF_2026) -> Envelope:
    return Envelope(tz=ZoneInfo("UTC"), reference=reference, source=source)


@pytest.fixture
def env() -> Envelope:
    return utc_env()
