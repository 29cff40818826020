"""BetaSampler's input checks, zero-copy output and library loading errors."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mlkube import native
from mlkube.native import BetaSampler, NativeLibraryError

GOOD = np.array([1.0, 2.0, 3.0, 4.0, 5.0])


@pytest.fixture
def sampler() -> BetaSampler:
    return BetaSampler(0)


def test_out_is_filled_in_place(sampler: BetaSampler) -> None:
    out = np.full(5, -1.0)
    result = sampler.sample(GOOD, GOOD, out=out)
    assert result is out
    assert np.all((out > 0.0) & (out < 1.0))


def test_read_only_inputs_are_accepted(sampler: BetaSampler) -> None:
    alpha = GOOD.copy()
    alpha.flags.writeable = False
    assert sampler.sample(alpha, GOOD).shape == (5,)


class _Tagged(np.ndarray):
    """An ndarray subclass, as libraries sometimes hand out."""


def test_ndarray_subclasses_are_accepted(sampler: BetaSampler) -> None:
    out = sampler.sample(GOOD.view(_Tagged), GOOD, np.empty(5).view(_Tagged))
    assert isinstance(out, _Tagged)
    assert np.all((out > 0.0) & (out < 1.0))


def test_empty_batch(sampler: BetaSampler) -> None:
    assert sampler.sample(np.empty(0), np.empty(0)).shape == (0,)


@pytest.mark.parametrize(
    ("alpha", "beta", "out", "message"),
    [
        (GOOD.astype(np.float32), GOOD, None, "alpha must have dtype float64, got float32"),
        (GOOD, GOOD.astype(np.int64), None, "beta must have dtype float64, got int64"),
        (GOOD.astype(">f8"), GOOD, None, "alpha must have dtype float64, got >f8"),
        (GOOD.reshape(5, 1), GOOD, None, r"alpha must be 1-D, got shape \(5, 1\)"),
        (GOOD, np.arange(10.0)[::2], None, "beta must be C-contiguous"),
        ([1.0, 2.0], GOOD, None, "alpha must be a numpy.ndarray, got list"),
        (GOOD, GOOD[:4], None, "alpha and beta differ in length: 5 != 4"),
        (GOOD, GOOD, np.empty(4), "out has length 4, expected 5"),
        (GOOD, GOOD, np.empty(5, dtype=np.float32), "out must have dtype float64"),
        (GOOD, GOOD, np.empty((5, 2))[:, 0], "out must be C-contiguous"),
    ],
)
def test_bad_arrays_raise_value_error(
    sampler: BetaSampler, alpha: object, beta: object, out: object, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        sampler.sample(alpha, beta, out)  # type: ignore[arg-type]


def test_read_only_out_is_refused(sampler: BetaSampler) -> None:
    out = np.empty(5)
    out.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        sampler.sample(GOOD, GOOD, out)


@pytest.mark.parametrize("bad", [0.0, -0.0, -2.5, math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("which", ["alpha", "beta"])
def test_invalid_parameters_name_the_first_bad_index(
    sampler: BetaSampler, backend: str, bad: float, which: str
) -> None:
    alpha, beta = GOOD.copy(), GOOD.copy()
    target = alpha if which == "alpha" else beta
    target[3] = bad
    target[4] = bad
    out = np.full(5, -1.0)
    with pytest.raises(
        ValueError, match=rf"^{which}\[3\] = .* is invalid: {which} must be finite and > 0$"
    ):
        sampler.sample(alpha, beta, out)
    assert np.all(out == -1.0), "out must be untouched when the call fails"


def test_failed_call_draws_nothing(sampler: BetaSampler) -> None:
    twin = BetaSampler(0)
    with pytest.raises(ValueError, match="alpha"):
        sampler.sample(np.array([1.0, -1.0]), np.array([1.0, 1.0]))
    np.testing.assert_array_equal(sampler.sample(GOOD, GOOD), twin.sample(GOOD, GOOD))


def test_beta_sample_rejects_invalid_parameters() -> None:
    with pytest.raises(ValueError, match="finite and > 0"):
        native.beta_sample(0.0, 1.0, 1)


def test_seed_must_be_an_integer() -> None:
    with pytest.raises(TypeError, match="seed must be an int"):
        BetaSampler(1.5)  # type: ignore[arg-type]


def test_backend_selection() -> None:
    assert native.backend() in {"scalar", "avx2"}
    with pytest.raises(ValueError, match="unknown backend 'sse9'"):
        native.set_backend("sse9")
    native.set_backend("scalar")
    try:
        assert native.backend() == "scalar"
    finally:
        native.set_backend("auto")


def test_library_candidates_order(tmp_path: Path) -> None:
    override = tmp_path / "custom.so"
    paths = native.library_candidates({native.ENV_LIBRARY: str(override)})
    assert paths[0] == override
    assert paths[1] == Path(native.__file__).resolve().with_name("libbetadist.so")
    assert native.library_candidates({}) == paths[1:]


def test_load_error_names_every_path_and_the_build_command(tmp_path: Path) -> None:
    missing = tmp_path / "missing.so"
    not_a_library = tmp_path / "garbage.so"
    not_a_library.write_bytes(b"this is not an ELF file")
    with pytest.raises(NativeLibraryError) as excinfo:
        native.open_library([missing, not_a_library])
    message = str(excinfo.value)
    assert f"{missing}: no such file" in message
    assert str(not_a_library) in message
    assert "make native" in message
    assert "pip install -e ." in message


def test_override_path_is_loaded() -> None:
    real = native.library_candidates({})[0]
    lib = native.open_library([Path("/nonexistent/libbetadist.so"), real])
    assert 0.0 < lib.beta_sample(2.0, 3.0, 1) < 1.0
