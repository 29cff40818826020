"""cffi binding (ABI mode) to libbetadist, the exact Beta sampler written in C.

ABI mode (``ffi.dlopen``) keeps the C library a plain shared object: no Python C-API, no
compiler needed at import time, and the very same ``libbetadist.so`` serves Go/cgo callers.
The library is searched first at ``$MLKUBE_BETADIST_LIB``, then next to this package (where
``pip install -e .`` / ``make native`` put it).

:class:`BetaSampler` keeps one generator state per thread, each a non-overlapping split of
the sampler's root stream, and moves every state onto a fresh stream in a forked child, so a
pre-fork server's workers never draw the numbers their parent or siblings draw.
"""

from __future__ import annotations

import os
import secrets
import threading
import weakref
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from cffi import FFI

__all__ = [
    "ENV_LIBRARY",
    "BetaSampler",
    "NativeLibraryError",
    "backend",
    "beta_sample",
    "library_candidates",
    "load_library",
    "open_library",
    "set_backend",
]

ENV_LIBRARY: Final = "MLKUBE_BETADIST_LIB"
LIBRARY_NAME: Final = "libbetadist.so"
BUILD_HINT: Final = "build it with `make native` (or `pip install -e .`) in the mlkube source tree"

_CDEF: Final = """
typedef struct betadist_rng betadist_rng;
betadist_rng *betadist_rng_create(uint64_t seed);
void betadist_rng_seed(betadist_rng *rng, uint64_t seed);
void betadist_rng_free(betadist_rng *rng);
void betadist_rng_jump(betadist_rng *rng);
betadist_rng *betadist_rng_split(betadist_rng *parent);
void betadist_rng_reseed_mix(betadist_rng *rng, uint64_t salt);
uint64_t betadist_rng_next_u64(betadist_rng *rng);
double betadist_rng_uniform(betadist_rng *rng);
double betadist_rng_normal(betadist_rng *rng);
double betadist_rng_gamma(betadist_rng *rng, double shape);
int betadist_sample_batch(betadist_rng *rng, const double *alpha, const double *beta,
                          double *out, size_t n, size_t *bad_index);
const char *betadist_strerror(int code);
int betadist_set_backend(int backend);
int betadist_backend(void);
double beta_sample(double alpha, double beta, long seed);
"""

# Mirrors of the C enums in native/betadist.h.
OK: Final = 0
EALPHA: Final = 1
EBETA: Final = 2
ENULL: Final = 3
BACKENDS: Final = {"auto": 0, "scalar": 1, "avx2": 2}
_BACKEND_NAMES: Final = {1: "scalar", 2: "avx2"}

ffi: Final = FFI()
ffi.cdef(_CDEF)

_U64_MASK: Final = (1 << 64) - 1


class NativeLibraryError(OSError):
    """libbetadist.so could not be loaded from any candidate path."""


def library_candidates(env: dict[str, str] | None = None) -> list[Path]:
    """The paths tried, in order: ``$MLKUBE_BETADIST_LIB`` (when set), then the package dir."""
    environ = os.environ if env is None else env
    candidates: list[Path] = []
    override = environ.get(ENV_LIBRARY, "").strip()
    if override:
        candidates.append(Path(override))
    candidates.append(Path(__file__).resolve().with_name(LIBRARY_NAME))
    return candidates


def open_library(candidates: list[Path]) -> Any:
    """dlopen the first candidate that loads; the error lists why each one did not."""
    failures: list[str] = []
    for path in candidates:
        if not path.is_file():
            failures.append(f"{path}: no such file")
            continue
        try:
            return ffi.dlopen(str(path))
        except OSError as exc:
            failures.append(f"{path}: {exc}")
    tried = "; ".join(failures) if failures else "no candidate paths"
    raise NativeLibraryError(f"cannot load {LIBRARY_NAME} (tried {tried}); {BUILD_HINT}")


@cache
def load_library() -> Any:
    """Open libbetadist once per process (see :func:`library_candidates` for where)."""
    return open_library(library_candidates())


def beta_sample(alpha: float, beta: float, seed: int) -> float:
    """One draw via the C ``beta_sample`` compatibility call (same seed, same value)."""
    if not (np.isfinite(alpha) and np.isfinite(beta) and alpha > 0 and beta > 0):
        raise ValueError(f"alpha and beta must be finite and > 0, got alpha={alpha}, beta={beta}")
    signed = ((int(seed) + 2**63) % 2**64) - 2**63  # C long: any int, taken modulo 2^64
    return float(load_library().beta_sample(float(alpha), float(beta), signed))


def set_backend(name: str) -> None:
    """Pin the batch backend process-wide (``auto``, ``scalar`` or ``avx2``)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {sorted(BACKENDS)}")
    if load_library().betadist_set_backend(BACKENDS[name]) != 0:
        raise ValueError(f"backend {name!r} is not supported by this CPU")


def backend() -> str:
    """The batch backend in use: ``scalar`` or ``avx2``."""
    return _BACKEND_NAMES[int(load_library().betadist_backend())]


def _new_seed() -> int:
    return secrets.randbits(64)


# Every live sampler, so that a forked child can move each onto a fresh stream.
_SAMPLERS: weakref.WeakSet[BetaSampler] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # Fresh OS entropy, not just the pid: a restarted worker may reuse a dead one's pid
    # while the parent's root state has not moved, and must still not repeat its stream.
    salt = secrets.randbits(64) ^ os.getpid()
    for sampler in list(_SAMPLERS):
        sampler._reseed_after_fork(salt)


os.register_at_fork(after_in_child=_after_fork_in_child)


class BetaSampler:
    """Exact Beta(alpha[i], beta[i]) draws into numpy arrays, one generator per thread.

    ``BetaSampler(seed)`` makes the first thread that samples draw a reproducible stream;
    every further thread takes the next split (2^192 draws apart).  ``seed=None`` seeds from
    the OS.  After ``os.fork()`` the child reseeds from its parent's state mixed with fresh OS
    entropy, so no child repeats its parent's or a sibling's numbers.
    """

    __slots__ = ("__weakref__", "_generation", "_lib", "_local", "_lock", "_root", "seed")

    def __init__(self, seed: int | None = None) -> None:
        if seed is not None and not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int or None, got {type(seed).__name__}")
        self._lib = load_library()
        self.seed: Final[int] = _new_seed() if seed is None else int(seed)
        root = self._lib.betadist_rng_create(self.seed & _U64_MASK)
        if root == ffi.NULL:
            raise MemoryError("betadist_rng_create failed")
        self._root = ffi.gc(root, self._lib.betadist_rng_free)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._generation = 0
        _SAMPLERS.add(self)

    def _reseed_after_fork(self, salt: int) -> None:
        self._lock = threading.Lock()  # another thread may have held it at fork time
        self._lib.betadist_rng_reseed_mix(self._root, salt & _U64_MASK)
        self._generation += 1  # thread states copied from the parent are stale now

    def _thread_state(self) -> tuple[Any, Any]:
        """This thread's generator and its error-index cell, split off the root on first use.

        Cached per thread so that a call costs no allocation; a stale state (inherited
        through fork) is replaced.
        """
        local = self._local
        state: tuple[Any, Any] | None = getattr(local, "state", None)
        if state is not None and local.generation == self._generation:
            return state
        with self._lock:
            raw = self._lib.betadist_rng_split(self._root)
            generation = self._generation
        if raw == ffi.NULL:
            raise MemoryError("betadist_rng_split failed")
        state = (ffi.gc(raw, self._lib.betadist_rng_free), ffi.new("size_t *"))
        local.state = state
        local.generation = generation
        return state

    def sample(
        self,
        alpha: npt.NDArray[np.float64],
        beta: npt.NDArray[np.float64],
        out: npt.NDArray[np.float64] | None = None,
    ) -> npt.NDArray[np.float64]:
        """Fill ``out`` (or a new array) with ``out[i] ~ Beta(alpha[i], beta[i])``.

        Arrays must be float64, 1-D, C-contiguous and of equal length (``out`` writeable);
        nothing is copied.  Raises ValueError naming the problem, and for a parameter that
        is <= 0, NaN or infinite the index of the first bad item (``out`` is then untouched).
        """
        _check_array("alpha", alpha)
        _check_array("beta", beta)
        n = alpha.shape[0]
        if beta.shape[0] != n:
            raise ValueError(f"alpha and beta differ in length: {n} != {beta.shape[0]}")
        if out is None:
            out = np.empty(n, dtype=np.float64)
        else:
            _check_array("out", out)
            if out.shape[0] != n:
                raise ValueError(f"out has length {out.shape[0]}, expected {n}")
            if not out.flags.writeable:
                raise ValueError("out must be writeable")
        if n == 0:
            return out
        rng, bad = self._thread_state()
        code = self._lib.betadist_sample_batch(
            rng,
            ffi.from_buffer("double[]", alpha),
            ffi.from_buffer("double[]", beta),
            ffi.from_buffer("double[]", out, require_writable=True),
            n,
            bad,
        )
        if code != OK:
            raise ValueError(_error_message(code, int(bad[0]), alpha, beta))
        return out


_FLOAT64: Final = np.dtype(np.float64)


def _check_array(name: str, array: object) -> None:
    # Fast path first (a request's arrays are almost always right): builtin dtypes are
    # singletons, and `is` is several times cheaper than dtype equality.
    if (
        type(array) is np.ndarray
        and array.dtype is _FLOAT64
        and array.ndim == 1
        and array.flags.c_contiguous
    ):
        return
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{name} must be a numpy.ndarray, got {type(array).__name__}")
    if array.dtype != np.float64:
        raise ValueError(f"{name} must have dtype float64, got {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {array.shape}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")


def _error_message(
    code: int, index: int, alpha: npt.NDArray[np.float64], beta: npt.NDArray[np.float64]
) -> str:
    if code == EALPHA:
        return f"alpha[{index}] = {alpha[index]!r} is invalid: alpha must be finite and > 0"
    if code == EBETA:
        return f"beta[{index}] = {beta[index]!r} is invalid: beta must be finite and > 0"
    return f"libbetadist error {code}: {ffi.string(load_library().betadist_strerror(code))!r}"
