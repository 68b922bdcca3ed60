"""docs/configuration.md documents every option of config.py with its default; the example
configuration file is valid and names only real options."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

from mailwarden.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "configuration.md"
EXAMPLE = ROOT / "contrib" / "mailwarden.toml.example"
_ROW = re.compile(r"^\| `(?P<key>[a-z_0-9]+)` \| `(?P<default>[^`]*)` \| (?P<meaning>.+) \|$")
# defaults that depend on the machine (documented in words next to the value)
_DYNAMIC = {("", "state_dir")}


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return str(v)


def documented() -> dict[tuple[str, str], str]:
    out: dict[tuple[str, str], str] = {}
    section = None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            m = re.match(r"^## `\[(\w+)\]`$", line)
            section = m.group(1) if m else ("" if line == "## top level" else None)
            continue
        m = _ROW.match(line)
        if m and section is not None:
            assert m["meaning"].strip(), f"{section}.{m['key']}: no explanation"
            out[(section, m["key"])] = m["default"]
    return out


def options() -> dict[tuple[str, str], str]:
    s = Settings()
    out: dict[tuple[str, str], str] = {}
    for name in type(s).model_fields:
        v = getattr(s, name)
        if hasattr(type(v), "model_fields"):
            for k in type(v).model_fields:
                out[(name, k)] = _toml(getattr(v, k))
        else:
            out[("", name)] = _toml(v) if not isinstance(v, Path) else json.dumps(str(v))
    return out


def test_every_option_is_documented_with_its_default() -> None:
    doc, opts = documented(), options()
    missing = sorted(f"{s}.{k}" if s else k for s, k in set(opts) - set(doc))
    assert not missing, f"options missing from docs/configuration.md: {missing}"
    stale = sorted(f"{s}.{k}" for s, k in set(doc) - set(opts))
    assert not stale, f"docs/configuration.md documents options that do not exist: {stale}"
    wrong = {
        f"{s}.{k}": (doc[(s, k)], v)
        for (s, k), v in opts.items()
        if (s, k) not in _DYNAMIC and doc[(s, k)] != v
    }
    assert not wrong, f"documented default differs (doc, code): {wrong}"


def test_example_configuration_is_valid() -> None:
    data = tomllib.loads(EXAMPLE.read_text())
    Settings.model_validate(data)  # every key real, every value valid
    # and every option appears in it, commented out or set
    text = EXAMPLE.read_text()
    for s, k in options():
        assert re.search(rf"^#? ?{k} = ", text, re.M), f"{s}.{k} not in the example"
