"""The public surface of mailwarden.forensics stays what docs and other areas rely on."""

from __future__ import annotations

import mailwarden.forensics as fx


def test_exported_members_resolve() -> None:
    assert fx.__all__ == sorted(fx.__all__)
    for name in fx.__all__:
        assert getattr(fx, name) is not None, name
    assert fx.parse_received("from a ([192.0.2.1]) by b").ip == "192.0.2.1"
