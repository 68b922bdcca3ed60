"""Every command's --help shows the config sections its options name ("[web] bind"): rich
markup would otherwise swallow an unescaped "[web]" and print "( bind)"."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import typer
from typer.testing import CliRunner

from mailwarden.cli import _register, app

SECTION = re.compile(r"\\?\[([a-z_]+)\]")


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, cmd
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):  # typer vendors click
        yield from _commands(sub, (*path, name))


def test_help_keeps_the_section_names() -> None:
    _register()
    root = typer.main.get_command(app)
    runner = CliRunner()
    checked = 0
    for path, cmd in _commands(root):
        named = {s for p in cmd.params for s in SECTION.findall(getattr(p, "help", None) or "")}
        if not named:
            continue
        out = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "240"}).output
        for section in named:
            assert f"[{section}]" in out, (path, section)
            checked += 1
    assert checked >= 8  # run, report, postfix, breaker and egress options name sections
