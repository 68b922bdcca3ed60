"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py; the real
servers (Postfix, DNS, SMTP fakes, PostgreSQL) in tests/fixtures/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Fixture modules (real servers). Add yours here: one line per module in tests/fixtures/.
pytest_plugins = [
    "fixtures.dns",
    "fixtures.slot",
    "fixtures.postfix",
    "fixtures.smtp",
    "fixtures.postgres",
    "fixtures.alerts",
    "fixtures.journal",
]

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"
DATA = TESTS / "data"
ARTIFACTS = ROOT / "artifacts"  # screenshots, logs of failed runs: kept by CI


def is_root() -> bool:
    return os.geteuid() == 0


requires_root = pytest.mark.skipif(not is_root(), reason="needs root")


@pytest.fixture
def etc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty /etc/mailwarden override directory for this test."""
    d = tmp_path / "etc-mailwarden"
    d.mkdir()
    monkeypatch.setenv("MAILWARDEN_ETC", str(d))
    monkeypatch.delenv("MAILWARDEN_CONFIG", raising=False)
    return d


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the real /etc/mailwarden or state directory from a test by accident."""
    if "MAILWARDEN_ETC" not in os.environ:
        monkeypatch.setenv("MAILWARDEN_ETC", str(tmp_path / "no-etc"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
