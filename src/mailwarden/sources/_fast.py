"""Fast constructors for the frozen, slotted event records of the parse hot path.

A frozen dataclass ``__init__`` sets every field through ``object.__setattr__`` (the frozen
guard), which costs about twice a direct slot store. :func:`constructor` builds, once per class,
a function taking *all* fields positionally that stores them straight into the slots. The
result is an ordinary instance of the class (equal to, and indistinguishable from, one made by
its ``__init__``); only the parser's hot path uses these, everything else calls the class.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def constructor(cls: type[T]) -> Callable[..., T]:
    """Return ``make(f1, f2, ...)`` for the dataclass ``cls`` (fields in field order; fields
    with defaults may be omitted)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    names = [f.name for f in fields]
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_MISSING": dataclasses.MISSING}
    params = []
    body = ["    o = _new(_cls)"]
    for i, f in enumerate(fields):
        ns[f"_set{i}"] = getattr(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            ns[f"_def{i}"] = f.default
            params.append(f"{f.name}=_def{i}")
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"_fac{i}"] = f.default_factory
            params.append(f"{f.name}=_MISSING")
            body.append(f"    if {f.name} is _MISSING: {f.name} = _fac{i}()")
        else:
            params.append(f.name)
        body.append(f"    _set{i}(o, {f.name})")
    body.append("    return o")
    src = f"def make({', '.join(params)}):\n" + "\n".join(body) + "\n"
    exec(compile(src, f"<fast constructor of {cls.__name__}>", "exec"), ns)
    make: Callable[..., T] = ns["make"]
    make.__doc__ = f"Build a {cls.__name__} from all {len(names)} fields, positionally."
    return make
