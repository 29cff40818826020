"""cffi binding (ABI mode) to libbetadist: the exact Beta sampler, and the bandit's request path.

ABI mode (``ffi.dlopen``) keeps the C library a plain shared object: no Python C-API, no
compiler needed at import time, and the very same ``libbetadist.so`` serves Go/cgo callers.
The library is searched first at ``$MLKUBE_BETADIST_LIB``, then next to this package (where
``pip install -e .`` / ``make native`` put it).

:class:`BetaSampler` keeps one generator state per thread, each a non-overlapping split of
the sampler's root stream, and moves every state onto a fresh stream in a forked child, so a
pre-fork server's workers never draw the numbers their parent or siblings draw.

:class:`ItemTable` and :class:`RequestScorer` wrap ``native/score.h``: a whole bandit
inference request -- parse, id lookup, Beta draws, ranking, JSON answer -- in one C pass.
"""

from __future__ import annotations

import os
import secrets
import threading
import weakref
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from cffi import FFI

__all__ = [
    "ENV_LIBRARY",
    "V1",
    "V2",
    "V2_BINARY",
    "BetaSampler",
    "ItemTable",
    "NativeLibraryError",
    "RequestScorer",
    "backend",
    "beta_sample",
    "format_double",
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

typedef struct mks_index mks_index;
mks_index *mks_index_create(const char *keys, const uint64_t *ends, size_t n, uint64_t seed);
void mks_index_free(mks_index *index);
size_t mks_index_size(const mks_index *index);
int64_t mks_index_find(const mks_index *index, const char *key, size_t len);
int mks_index_find_many(const mks_index *index, const char *keys, const uint64_t *ends,
                        size_t n, int64_t *rows);
typedef struct {
    uint32_t n_items;
    uint32_t top_k;
    int64_t segment_off;
    uint32_t segment_len;
    int64_t id_off;
    uint32_t id_len;
    uint32_t n_missing;
    uint32_t binary_output;
    uint32_t json_len;
} mks_request;
typedef struct mks_scorer mks_scorer;
mks_scorer *mks_scorer_create(size_t max_items);
void mks_scorer_free(mks_scorer *scorer);
int mks_parse(mks_scorer *scorer, int protocol, const char *body, size_t len, mks_request *req);
int mks_parse_binary(mks_scorer *scorer, const char *body, size_t len, size_t json_len,
                     mks_request *req);
int mks_score(mks_scorer *scorer, betadist_rng *rng, const mks_index *index,
              const double *alpha, const double *beta, size_t n_rows,
              const char *body, int protocol, mks_request *req, const char *head,
              size_t head_len, const char **out, size_t *out_len, size_t *bad_row);
void mks_missing(const mks_scorer *scorer, uint32_t k, uint32_t *off, uint32_t *len);
size_t mks_format_double(double x, char *buf);
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


# --- the bandit's request path (native/score.h) ----------------------------------------------

# Mirrors of the C enums in native/score.h.
MKS_OK: Final = 0
MKS_FALLBACK: Final = 1
MKS_ENOMEM: Final = 2
MKS_EPARAM: Final = 3
MKS_EARG: Final = 4
V2: Final = 2  # OIP v2 REST infer
V1: Final = 1  # KServe v1 predict
V2_BINARY: Final = 3  # OIP v2 REST infer with the binary tensor extension (parse_binary)

# Seeds the id hash per process (see native/score.c: collisions only ever cost time).
_INDEX_SEED: Final = secrets.randbits(64)


def _pack(items: Sequence[str]) -> tuple[bytes, npt.NDArray[np.uint64]]:
    """The ids back to back (UTF-8) and where each one ends."""
    try:
        keys = "".join(items).encode("ascii")  # one C-level pass when all ids are ASCII
        lengths = np.fromiter(map(len, items), np.uint64, len(items))
    except UnicodeEncodeError:
        encoded = [item.encode("utf-8", "surrogatepass") for item in items]
        keys = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.uint64, len(encoded))
    return keys, np.cumsum(lengths, dtype=np.uint64)


class ItemTable:
    """A snapshot's posterior parameters with its ids indexed in C, for :class:`RequestScorer`.

    ``items[i]`` has ``Beta(alpha[i], beta[i])``; ``alpha`` and ``beta`` have one more row,
    the prior, which unknown ids get.  An id listed twice maps to its last row (as a dict
    built from the same list would).  The arrays are referenced, not copied: they must not
    change while the table is in use.
    """

    __slots__ = ("_alpha", "_alpha_ptr", "_beta", "_beta_ptr", "_index", "_lib", "rows")

    def __init__(
        self,
        items: Sequence[str],
        alpha: npt.NDArray[np.float64],
        beta: npt.NDArray[np.float64],
    ) -> None:
        _check_array("alpha", alpha)
        _check_array("beta", beta)
        n = len(items)
        if alpha.shape[0] != n + 1 or beta.shape[0] != n + 1:
            raise ValueError(
                f"alpha and beta need {n + 1} rows ({n} items and the prior), "
                f"got {alpha.shape[0]} and {beta.shape[0]}"
            )
        self._lib = load_library()
        keys, ends = _pack(items)
        ends_ptr = ffi.from_buffer("uint64_t[]", ends) if n else ffi.NULL
        raw = self._lib.mks_index_create(keys, ends_ptr, n, _INDEX_SEED)
        if raw == ffi.NULL:
            raise MemoryError(f"mks_index_create failed for {n} items")
        self._index = ffi.gc(raw, self._lib.mks_index_free, size=len(keys) + 48 * n)
        self._alpha, self._beta = alpha, beta  # keep the buffers alive
        self._alpha_ptr = ffi.from_buffer("double[]", alpha)
        self._beta_ptr = ffi.from_buffer("double[]", beta)
        self.rows: Final[int] = n + 1

    def __len__(self) -> int:
        return self.rows - 1

    def find(self, item: str) -> int:
        """Row of ``item``, or -1 when the table does not know it."""
        key = item.encode("utf-8", "surrogatepass")
        return int(self._lib.mks_index_find(self._index, key, len(key)))

    def __contains__(self, item: str) -> bool:
        return self.find(item) >= 0

    def rows_of(self, items: Sequence[str]) -> npt.NDArray[np.int64]:
        """Row of each item (-1 for unknown ones), in one C pass."""
        n = len(items)
        rows = np.empty(n, dtype=np.int64)
        if n:
            keys, ends = _pack(items)
            self._lib.mks_index_find_many(
                self._index,
                keys,
                ffi.from_buffer("uint64_t[]", ends),
                n,
                ffi.from_buffer("int64_t[]", rows, require_writable=True),
            )
        return rows


class RequestScorer:
    """One event loop's C request path: parse a body, score it against an :class:`ItemTable`.

    :meth:`parse` accepts the plain shape of a bandit request (see ``native/score.h``) and
    returns False for anything else, which the caller then decodes in Python.  :meth:`score`
    draws from ``sampler`` (this thread's stream) and returns the complete JSON answer.
    Not thread-safe: the parse and the score share scratch space.
    """

    __slots__ = ("_bad", "_lib", "_out", "_out_len", "_req", "_sampler", "_scorer", "max_items")

    def __init__(self, max_items: int, sampler: BetaSampler) -> None:
        if not 0 < max_items < 2**31:
            raise ValueError(f"max_items must be in [1, 2^31), got {max_items}")
        self._lib = load_library()
        raw = self._lib.mks_scorer_create(max_items)
        if raw == ffi.NULL:
            raise MemoryError(f"mks_scorer_create failed for {max_items} items")
        self._scorer = ffi.gc(raw, self._lib.mks_scorer_free, size=80 * max_items)
        self._sampler = sampler
        self._req = ffi.new("mks_request *")
        self._out = ffi.new("const char **")
        self._out_len = ffi.new("size_t *")
        self._bad = ffi.new("size_t *")
        self.max_items: Final[int] = max_items

    def parse(self, body: bytes, protocol: int) -> bool:
        """True when ``body`` is a plain bandit request (then :meth:`score` may follow)."""
        code = self._lib.mks_parse(self._scorer, protocol, body, len(body), self._req)
        if code == MKS_EARG:
            raise ValueError(f"unknown protocol {protocol}")
        return bool(code == MKS_OK)

    def parse_binary(self, body: bytes, json_length: int) -> bool:
        """:meth:`parse` for a binary tensor request whose JSON part is ``json_length`` bytes;
        score it with protocol ``V2_BINARY``."""
        if not 0 <= json_length <= len(body):
            return False
        code = self._lib.mks_parse_binary(self._scorer, body, len(body), json_length, self._req)
        return bool(code == MKS_OK)

    @property
    def binary_json_length(self) -> int | None:
        """After scoring a binary request: its answer's JSON part length, when the answer is
        binary (the ``Inference-Header-Content-Length`` header), else None."""
        req = self._req
        return int(req.json_len) if req.binary_output else None

    @property
    def n_items(self) -> int:
        return int(self._req.n_items)

    @property
    def top_k(self) -> int:
        return int(self._req.top_k)

    def segment(self, body: bytes) -> str | None:
        """The segment the parsed request names, or None."""
        req = self._req
        off = req.segment_off
        return None if off < 0 else body[off : off + req.segment_len].decode("ascii")

    def request_id(self, body: bytes) -> str | None:
        req = self._req
        off = req.id_off
        return None if off < 0 else body[off : off + req.id_len].decode("ascii")

    def score(self, body: bytes, table: ItemTable, protocol: int, head: bytes = b"") -> bytes:
        """The JSON answer to the request :meth:`parse` just accepted (the same ``body``).

        For V2, ``head`` is the rendered ``{"model_name":...,"model_version":...,`` prefix.
        Raises ValueError when a posterior parameter in ``table`` is invalid.
        """
        rng, _ = self._sampler._thread_state()
        code = self._lib.mks_score(
            self._scorer,
            rng,
            table._index,
            table._alpha_ptr,
            table._beta_ptr,
            table.rows,
            body,
            protocol,
            self._req,
            head,
            len(head),
            self._out,
            self._out_len,
            self._bad,
        )
        if code != MKS_OK:
            if code == MKS_EPARAM:
                row = int(self._bad[0])
                raise ValueError(
                    f"row {row} has invalid posterior parameters: alpha={table._alpha[row]!r}, "
                    f"beta={table._beta[row]!r} (both must be finite and > 0)"
                )
            if code == MKS_ENOMEM:
                raise MemoryError("mks_score: out of memory")
            raise ValueError("mks_score: called without a successful parse of this body")
        return ffi.unpack(self._out[0], self._out_len[0])  # type: ignore[no-any-return]

    @property
    def n_missing(self) -> int:
        """Ids of the last scored request that the table did not know."""
        return int(self._req.n_missing)

    def missing(self, body: bytes) -> list[str]:
        """Those ids (they got the prior)."""
        off = ffi.new("uint32_t *")
        length = ffi.new("uint32_t *")
        out: list[str] = []
        for k in range(self._req.n_missing):
            self._lib.mks_missing(self._scorer, k, off, length)
            start = int(off[0])
            out.append(body[start : start + int(length[0])].decode("ascii"))
        return out


def format_double(x: float) -> str:
    """A score as the request path writes it (17 significant digits, exact round trip)."""
    buf = ffi.new("char[32]")
    n = load_library().mks_format_double(float(x), buf)
    return ffi.unpack(buf, n).decode("ascii")  # type: ignore[no-any-return]
