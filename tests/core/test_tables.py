from __future__ import annotations

from pathlib import Path

import pytest

from mailwarden.errors import TableError
from mailwarden.tables import load_merged, merge, read_toml


def test_merge_replaces_adds_and_disables_items_by_id() -> None:
    base = {"rule": [{"id": "a", "x": 1}, {"id": "b", "x": 2}], "meta": {"v": 1, "w": 2}}
    over = {
        "rule": [{"id": "b", "x": 3}, {"id": "c", "x": 4}, {"id": "a", "enabled": False}],
        "meta": {"w": 5},
    }
    out = merge(base, over)
    assert out["rule"] == [{"id": "b", "x": 3}, {"id": "c", "x": 4}]
    assert out["meta"] == {"v": 1, "w": 5}


def test_bad_toml_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "broken.toml"
    p.write_text("x = [1,\n")
    with pytest.raises(TableError, match=r"broken\.toml"):
        read_toml(p)


def test_unknown_table_is_an_error(etc: Path) -> None:
    with pytest.raises(TableError, match="no table named"):
        load_merged("does-not-exist")
