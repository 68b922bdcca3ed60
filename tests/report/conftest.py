"""Fixtures of the analyze tests: real logs (the recorded sample, and a synthetic one made by
the benchmark's own generator), and a classifier loaded once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REAL_LOG = ROOT / "tests" / "data" / "report" / "postfix-real.log"


@pytest.fixture(scope="session")
def real_log() -> Path:
    return REAL_LOG


@pytest.fixture(scope="session")
def synthetic_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30,000 lines in the format of a real Postfix 3.7 log (bench/genlog.py)."""
    out = tmp_path_factory.mktemp("genlog") / "gen.log"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "genlog.py"),
            "--lines",
            "30000",
            "--out",
            str(out),
            "--seed",
            "7",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return out


@pytest.fixture(scope="session")
def classifier():  # type: ignore[no-untyped-def]
    from mailwarden.classify.engine import Classifier

    return Classifier.load()
