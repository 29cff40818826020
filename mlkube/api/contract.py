"""The API side of the one contract between the halves (DESIGN.md, principle 7).

A ModelService field that the operator turns into runtime configuration takes its bounds
from the runtime's own settings model (``mlkube.serving.config``): ``runtime_bounds``
returns them as ``Annotated`` metadata, tightened where the API is stricter on purpose, and
refuses (at import time) a bound looser than the runtime's. So the CRD generated from
these models can never accept a value that ``mlkube serve`` then refuses in a crash loop.

``RUNTIME_FIELDS`` records which spec field lands in which runtime field; the contract
tests walk it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import annotated_types as at

from mlkube.serving.config import BOUND_KINDS, field_bounds, field_choices

_LOWER = ("gt", "ge", "min_length")
_UPPER = ("lt", "le", "max_length")

_CONSTRAINT = {
    "gt": at.Gt,
    "ge": at.Ge,
    "lt": at.Lt,
    "le": at.Le,
    "min_length": at.MinLen,
    "max_length": at.MaxLen,
}


@dataclass(frozen=True)
class Bounds(at.GroupedMetadata):
    """Constraints for ``Annotated[T, Bounds(...)]``; pydantic applies each one."""

    bounds: tuple[tuple[str, Any], ...]

    def __iter__(self) -> Iterator[object]:
        for kind, value in self.bounds:
            yield _CONSTRAINT[kind](value)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.bounds)


RUNTIME_FIELDS: dict[str, tuple[str, ...]] = {}
"""Spec path (as in the CRD: ``model.bandit.maxItems``) -> runtime config path."""


def _tighter(kind: str, value: Any, runtime: dict[str, Any]) -> bool:
    """Whether the bound ``kind=value`` admits nothing the runtime's bounds refuse."""
    side = _LOWER if kind in _LOWER else _UPPER
    theirs = [(k, v) for k, v in runtime.items() if k in side]
    for their_kind, their_value in theirs:
        if side is _LOWER:
            ok = value > their_value or (
                value == their_value and not (kind == "ge" and their_kind == "gt")
            )
        else:
            ok = value < their_value or (
                value == their_value and not (kind == "le" and their_kind == "lt")
            )
        if not ok:
            return False
    return True


def runtime_bounds(spec_path: str, path: tuple[str, ...], **stricter: Any) -> Bounds:
    """Constraints of the spec field ``spec_path`` that lands in runtime ``path``.

    The runtime's constraints, with ``stricter`` ones (``ge=1024``) replacing them on their
    side; a ``stricter`` bound that is in fact looser raises ``ValueError``.
    """
    runtime = field_bounds(path)
    out = dict(runtime)
    for kind, value in stricter.items():
        if kind not in BOUND_KINDS:
            raise TypeError(f"{spec_path}: unknown bound {kind!r}")
        if not _tighter(kind, value, runtime):
            raise ValueError(
                f"{spec_path}: {kind}={value!r} is looser than the runtime's "
                f"{'.'.join(path)} ({runtime}); a spec the API accepts must start a runtime"
            )
        for same_side in _LOWER if kind in _LOWER else _UPPER:
            out.pop(same_side, None)
    for kind, value in stricter.items():
        out[kind] = value
    RUNTIME_FIELDS[spec_path] = path
    return Bounds(tuple(out.items()))


def runtime_enum(spec_path: str, path: tuple[str, ...], enum: type[StrEnum]) -> None:
    """Record that ``enum`` lands in runtime ``path``; refuse a value the runtime lacks."""
    allowed = field_choices(path)
    extra = {m.value for m in enum} - set(allowed or ())
    if allowed is None or extra:
        raise ValueError(
            f"{spec_path}: {sorted(extra)} not among the runtime's {'.'.join(path)} {allowed}"
        )
    RUNTIME_FIELDS[spec_path] = path
