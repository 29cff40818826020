"""Fixtures for the libbetadist tests: every backend this CPU can run, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mlkube import native


def _available_backends() -> list[str]:
    names = ["scalar"]
    try:
        native.set_backend("avx2")
    except ValueError:
        pass
    else:
        names.append("avx2")
    finally:
        native.set_backend("auto")
    return names


@pytest.fixture(params=_available_backends())
def backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run the test once per batch backend (the vector and scalar code draw differently)."""
    name: str = request.param
    native.set_backend(name)
    try:
        yield name
    finally:
        native.set_backend("auto")
