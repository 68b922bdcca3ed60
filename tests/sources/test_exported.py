"""The public surface of mailwarden.sources (httpx's test_exported_members)."""

from __future__ import annotations

import mailwarden.sources as sources


def test_all_is_sorted_and_importable() -> None:
    assert sources.__all__ == sorted(sources.__all__)
    for name in sources.__all__:
        assert getattr(sources, name) is not None
        assert name in (sources.__doc__ or ""), f"{name} is not documented in the docstring"
