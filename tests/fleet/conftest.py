"""A PostgreSQL cluster of the test's own (so it can be restarted under load):
:class:`fixtures.postgres.Cluster` (initdb + pg_ctl, loopback only, as the ``postgres`` user
when running as root)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from fixtures.postgres import Cluster


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    c = Cluster(prefix="mailwarden-fleet-pg-")
    try:
        c.start()
        yield c
    finally:
        c.destroy()
