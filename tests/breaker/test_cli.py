"""The breaker CLI as a person uses it (typer runner, real store, real rules and classifier):
open, status, history, close, replay; bad input gives a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mailwarden import cli
from mailwarden.errors import EXIT_ERROR

DATA = Path(__file__).resolve().parent.parent / "data" / "breaker"


@pytest.fixture
def run(tmp_path: Path, etc: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    cfg = tmp_path / "mw.toml"
    cfg.write_text(
        f'state_dir = "{tmp_path / "state"}"\n[store]\nurl = "sqlite:///{tmp_path / "mw.db"}"\n'
        f'[breaker]\npostfix_config = "{tmp_path / "no-postfix"}"\n'
    )
    monkeypatch.setenv("MAILWARDEN_CONFIG", str(cfg))
    cli._register()
    runner = CliRunner()

    def invoke(*args: str) -> tuple[int, str]:
        r = runner.invoke(cli.app, list(args))
        if r.exception and not isinstance(r.exception, SystemExit):
            raise r.exception
        return r.exit_code, r.output

    invoke.state = tmp_path / "state"  # type: ignore[attr-defined]
    return invoke


def test_open_status_history_close(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("breaker", "open", "gmx", "--for", "2h", "--reason", "delisting request sent")
    assert code == 0 and "gmx: open until" in out
    code, out = run("breaker", "status", "--json", "--no-queue")
    assert code == 1  # something is not closed
    [row] = json.loads(out)["providers"]
    assert row["provider"] == "gmx" and row["state"] == "open"
    assert row["until"] - row["since"] == pytest.approx(7200)
    assert row["note"] == "delisting request sent"
    view = json.loads((run.state / "breaker-view.json").read_text())
    assert view["providers"]["gmx"]["reason"].endswith("gmx: delisting request sent")
    code, out = run("breaker", "status", "--no-queue")
    assert "gmx" in out and "open" in out
    code, out = run("breaker", "close", "gmx", "--no-release", "--note", "done")
    assert code == 0 and "gmx: closed" in out
    code, out = run("breaker", "history", "--json")
    hist = json.loads(out)["transitions"]
    assert [(h["old"], h["new"], h["actor"]) for h in hist] == [
        ("open", "closed", "person"),
        ("closed", "open", "person"),
    ]
    assert json.loads((run.state / "breaker-view.json").read_text())["providers"] == {}
    code, out = run("breaker", "status", "--json", "--no-queue")
    assert code == 0


def test_open_without_for_stays_open(run) -> None:  # type: ignore[no-untyped-def]
    code, _ = run("breaker", "open", "yahoo", "--reason", "TSS09 received")
    assert code == 0
    [row] = json.loads(run("breaker", "status", "--json", "--no-queue")[1])["providers"]
    assert row["until"] is None


@pytest.mark.parametrize(
    "args",
    [
        ("breaker", "open", "gmx", "--reason", "bad\nreason"),
        ("breaker", "open", "gmx", "--reason", "x", "--for", "soon"),
        ("breaker", "open", "evil provider", "--reason", "x"),
        ("breaker", "close", "../../etc"),
    ],
)
def test_bad_input_is_a_clear_error(run, args) -> None:  # type: ignore[no-untyped-def]
    from mailwarden.errors import MailwardenError

    with pytest.raises(MailwardenError):
        run(*args)
    assert EXIT_ERROR == 2


def test_replay_json_schema(run) -> None:  # type: ignore[no-untyped-def]
    code, out = run("breaker", "replay", "--json", str(DATA / "sample.log"))
    assert code == 0
    doc = json.loads(out)
    assert doc["trips"] and set(doc["trips"][0]) >= {"provider", "rule", "at", "reply"}
    assert isinstance(doc["trips"][0]["at"], float)
    assert "swisscom/not-allowed" in doc["never_matched"]
    assert all(isinstance(r, str) for r in doc["never_matched"])
