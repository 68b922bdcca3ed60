"""Load, validate and merge the data tables (TOML) that hold knowledge which changes with the world.

Shipped tables live in the package (``mailwarden/data/``) and are read-only ("do not edit, create
your own file"). Local tables live in the override directory (``/etc/mailwarden/`` by default,
``$MAILWARDEN_ETC`` to point elsewhere, e.g. in tests). For a table *kind*:

* a single-file kind (``reasons``, ``dnsbl``, ``issuers``) is ``data/<kind>.toml``; a local
  ``<etc>/<kind>.toml`` is read after it and merged on top (see :func:`merge`);
* a directory kind (``providers``, ``breaker``) is ``data/<kind>/*.toml``; a local file with the
  same name replaces the shipped one, a new name adds to the set.

Tables are plain dicts here; each consumer validates its own kind with pydantic and raises
:class:`mailwarden.errors.TableError` naming the file.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from mailwarden.errors import TableError

DEFAULT_ETC = Path("/etc/mailwarden")


def etc_dir() -> Path:
    """The local override directory (``$MAILWARDEN_ETC`` or ``/etc/mailwarden``)."""
    return Path(os.environ.get("MAILWARDEN_ETC", str(DEFAULT_ETC)))


def data_dir() -> Path:
    """The shipped data directory inside the installed package."""
    return Path(str(resources.files("mailwarden") / "data"))


@dataclass(frozen=True, slots=True)
class TableFile:
    """One parsed TOML file and where it came from."""

    name: str  # file stem, e.g. "google"
    path: Path
    shipped: bool
    data: dict[str, Any]


def read_toml(path: Path) -> dict[str, Any]:
    """Parse one TOML file, turning syntax errors into a :class:`TableError` naming it."""
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise TableError(f"{path}: {exc}") from exc
    except OSError as exc:
        raise TableError(f"{path}: cannot read: {exc.strerror}") from exc


def iter_dir(kind: str, *, etc: Path | None = None) -> Iterator[TableFile]:
    """Yield the files of a directory kind, local files replacing shipped ones of the same name.

    Order: sorted by name, so results do not depend on the file system.
    """
    files: dict[str, TableFile] = {}
    shipped = data_dir() / kind
    if shipped.is_dir():
        for p in sorted(shipped.glob("*.toml")):
            files[p.stem] = TableFile(p.stem, p, True, read_toml(p))
    local = (etc or etc_dir()) / kind
    if local.is_dir():
        for p in sorted(local.glob("*.toml")):
            files[p.stem] = TableFile(p.stem, p, False, read_toml(p))
    for name in sorted(files):
        yield files[name]


def load_file(kind: str, *, etc: Path | None = None) -> list[TableFile]:
    """Return the shipped ``<kind>.toml`` and, if present, the local one (in that order)."""
    out: list[TableFile] = []
    shipped = data_dir() / f"{kind}.toml"
    if shipped.is_file():
        out.append(TableFile(kind, shipped, True, read_toml(shipped)))
    local = (etc or etc_dir()) / f"{kind}.toml"
    if local.is_file():
        out.append(TableFile(kind, local, False, read_toml(local)))
    if not out:
        raise TableError(f"no table named {kind!r} in {data_dir()} or {etc or etc_dir()}")
    return out


def merge(base: dict[str, Any], over: dict[str, Any], *, key: str = "id") -> dict[str, Any]:
    """Merge ``over`` onto ``base``.

    Tables merge recursively; arrays of tables whose items carry ``key`` merge item-wise (an
    item with the same ``key`` replaces the shipped one, ``enabled = false`` removes it, new
    items are appended); any other value in ``over`` replaces the one in ``base``.
    """
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v, key=key)
        elif (
            isinstance(v, list)
            and isinstance(out.get(k), list)
            and all(isinstance(i, dict) and key in i for i in v)
            and all(isinstance(i, dict) and key in i for i in out[k])
        ):
            items = {i[key]: i for i in out[k]}
            order = [i[key] for i in out[k]]
            for i in v:
                if i[key] not in items:
                    order.append(i[key])
                items[i[key]] = i
            out[k] = [items[n] for n in order if items[n].get("enabled", True) is not False]
        else:
            out[k] = v
    return out


def load_merged(kind: str, *, etc: Path | None = None, key: str = "id") -> dict[str, Any]:
    """Load a single-file kind with the local file merged on top of the shipped one."""
    files = load_file(kind, etc=etc)
    data = files[0].data
    for f in files[1:]:
        data = merge(data, f.data, key=key)
    return data
