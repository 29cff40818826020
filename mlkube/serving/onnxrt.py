"""ONNX models (``model.format: onnx``): one ``onnxruntime.InferenceSession`` per worker.

The model describes itself: its inputs and outputs (names, element types, shapes with the
dynamic dimensions as -1) are read from the session and are what ``GET /v2/models/{name}``
reports, what requests are checked against (a wrong datatype or shape is a 400 naming the
tensor, before anything runs), and what the answers carry.

Batching: when every input and every output has a dynamic first dimension, that dimension
is the batch dimension. The dynamic batcher hands :meth:`OnnxModel.predict` several
requests; those whose other dimensions agree are concatenated along it, run once, and the
outputs are split back by each request's rows. A request was validated on its own before it
joined (``prepare``), and if the merged run fails anyway, every request of it runs alone, so
that one bad request fails only itself.

Sessions run in one thread per worker next to the event loop (ONNX Runtime releases the GIL
while it computes): the loop keeps reading and parsing requests meanwhile, which is what a
batch gathers from. With batching on, the batcher hands batches to that thread directly
(:meth:`OnnxModel.predict_sync`, a ``ThreadedBatcher``): one runs while the next waits in
the thread's queue, and each batch's answers come back to the loop in one callback. ``intra_op_threads`` (threads of one run) default to the CPUs the pod
may use divided by its worker processes, so that the workers together do not oversubscribe
the CPU limit.

The pure parts (type mapping, shape checks, thread count, provider choice) are functions
that tests call with plain data; :class:`OnnxModel` is the shell around the session.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlkube.serving.cpulimit import CpuBudget
from mlkube.serving.cpulimit import detect as detect_cpu_budget
from mlkube.serving.model import (
    Model,
    ModelLoadError,
    ModelMetadata,
    ModelSettings,
    SupportsThreadedPredict,
    TensorSpec,
    settings_from,
)
from mlkube.serving.protocol import (
    DATATYPES,
    ClientError,
    InferenceRequest,
    InferenceResponse,
    Tensor,
    bad_request,
)

if TYPE_CHECKING:
    from mlkube.serving.config import OnnxConfig, ServeConfig
    from mlkube.serving.context import RuntimeContext
    from mlkube.serving.metrics import Metrics

log = logging.getLogger("mlkube.serving.onnx")

PLATFORM = "onnxruntime_onnx"
"""The platform name Triton reports for ONNX Runtime models."""

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"

#: ONNX Runtime's element types (``NodeArg.type``) -> OIP v2 datatypes.
ORT_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

GRAPH_LEVELS = {
    "disabled": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


# ------------------------------------------------------------------------------ pure parts


def datatype_of(ort_type: str, where: str) -> str:
    """The OIP datatype of an ONNX Runtime element type; ModelLoadError for the rest."""
    datatype = ORT_TYPES.get(ort_type)
    if datatype is None:
        raise ModelLoadError(
            f"model.path: {where} is {ort_type}, which the OIP cannot carry "
            f"(supported: {', '.join(ORT_TYPES)})"
        )
    return datatype


def dims(shape: Sequence[Any] | None) -> tuple[int, ...]:
    """A shape as ONNX Runtime reports it (ints, symbolic names, None) with dynamic dims -1."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape or ())


#: The OIP datatype of each numpy dtype that has one (native byte order): a dict look-up per
#: output of every answer instead of a comparison per datatype.
_NUMPY_DATATYPES: dict[np.dtype[Any], str] = {
    dtype: name for name, dtype in DATATYPES.items() if dtype is not None
}


def numpy_datatype(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype of an output array (strings come back as an object array)."""
    datatype = _NUMPY_DATATYPES.get(array.dtype)
    if datatype is not None:
        return datatype
    if array.dtype == object or array.dtype.kind in "US":
        return "BYTES"
    for name, dtype in DATATYPES.items():
        if dtype is not None and dtype == array.dtype:
            return name
    raise TypeError(f"output of numpy type {array.dtype} has no OIP datatype")


def shape_problem(shape: Sequence[int], declared: Sequence[int]) -> str | None:
    """Why a request's tensor shape does not fit the model's (None: it fits)."""
    if len(shape) != len(declared):
        return f"{list(shape)} has {len(shape)} dimensions, the model's {list(declared)} has {len(declared)}"
    for i, (got, want) in enumerate(zip(shape, declared, strict=True)):
        if want >= 0 and got != want:
            return f"{list(shape)} does not fit the model's {list(declared)} (dimension {i})"
    return None


def batchable(inputs: Sequence[TensorSpec], outputs: Sequence[TensorSpec]) -> bool:
    """Whether requests can be merged: every tensor has a dynamic first dimension."""
    return all(t.shape and t.shape[0] == -1 for t in (*inputs, *outputs))


def intra_op_threads(budget: CpuBudget, workers: int) -> int:
    """Threads of one session run: the CPUs this process may use, shared by the workers."""
    cpus = budget.cores if budget.limit is None else min(budget.cores, budget.limit)
    return max(1, math.floor(cpus / max(1, workers) + 1e-9))


def gpu_visible(env: Mapping[str, str]) -> bool:
    """Whether the container sees an NVIDIA GPU: the device plugin sets the variable."""
    value = env.get("NVIDIA_VISIBLE_DEVICES", "").strip().lower()
    return value not in ("", "void", "none")


def choose_providers(
    setting: str, available: Sequence[str], has_gpu: bool
) -> tuple[list[str], str | None]:
    """The execution providers to ask for, in preference order, and a warning (or None).

    CPU is always last: ONNX Runtime runs on it whatever another provider cannot."""
    if setting == "cpu":
        return [CPU], None
    if CUDA in available and (setting == "cuda" or has_gpu):
        return [CUDA, CPU], None
    if setting == "cuda":
        return [CPU], (
            "onnx.provider is cuda, but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu instead of onnxruntime): running on the CPU"
        )
    return [CPU], None


def onnx_file(local: str) -> str:
    """The .onnx file a fetched storage path stands for: the path itself when it is not a
    directory, else the directory's only ``*.onnx`` file (`mlkube fetch` refuses a directory
    with none or several; failing that, the directory, which check_model_file refuses)."""
    where = Path(local)
    if not where.is_dir():
        return local
    found = sorted(p for p in where.glob("*.onnx") if p.is_file())
    return str(found[0]) if len(found) == 1 else local


def check_model_file(path: str) -> str | None:
    """Why ``path`` cannot be a model file (None: a readable file). The master checks this
    before it starts any worker; whether the file is an ONNX model the session says."""
    file = Path(path)
    if not file.exists():
        return f"{path}: no such file"
    if not file.is_file():
        return f"{path}: not a file"
    if not os.access(file, os.R_OK):
        return f"{path}: not readable"
    return None


# ------------------------------------------------------------------------- requests


@dataclass(slots=True)
class OnnxInput:
    """One validated request: its feeds, rows (first dimension) and the rest of its shape."""

    feeds: dict[str, np.ndarray[Any, Any]]
    rows: int
    # The non-batch dimensions of every input: requests merge only when these agree.
    signature: tuple[tuple[int, ...], ...]
    protocol: str


def _array(tensor: Tensor, datatype: str, where: str) -> np.ndarray[Any, Any]:
    if datatype == "BYTES":
        data = tensor.data if isinstance(tensor.data, list) else list(tensor.data)
        # ONNX string tensors hold text: elements that are not UTF-8 (raw decoding keeps
        # those as bytes) are refused rather than altered.
        if not all(isinstance(x, str) for x in data):
            raise bad_request(f"{where}.data: an ONNX string input takes UTF-8 text")
        return np.array(data, dtype=object).reshape(tensor.shape)
    return tensor.numpy(where)


def _v1_array(tensor: Tensor, datatype: str, where: str) -> np.ndarray[Any, Any]:
    """KServe v1 ``instances``: a list of rows, whose shape is what the nesting says."""
    try:
        if datatype == "BYTES":
            array = np.array(tensor.data, dtype=object)
            if not all(isinstance(x, str) for x in array.reshape(-1)):
                raise bad_request(f"{where}: BYTES elements must be strings")
            return array
        dtype = DATATYPES[datatype]
        return np.asarray(tensor.data, dtype=dtype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise bad_request(f"{where}: not {datatype} rows of one shape ({exc})") from exc


def prepare_request(
    request: InferenceRequest, inputs: Sequence[TensorSpec], batch_dim: bool
) -> OnnxInput:
    """Check one request against the model's inputs and decode it (pure)."""
    declared = {t.name: t for t in inputs}
    for name in request.inputs:
        if name not in declared:
            raise bad_request(
                f"{request.label(name)}.name: the model has no input {name!r} "
                f"(inputs: {', '.join(declared)})"
            )
    missing = [name for name in declared if name not in request.inputs]
    if missing:
        raise bad_request(
            f"inputs: missing {', '.join(repr(n) for n in missing)} "
            f"(the model needs {', '.join(declared)})"
        )
    feeds: dict[str, np.ndarray[Any, Any]] = {}
    for spec in inputs:
        tensor = request.inputs[spec.name]
        where = request.label(spec.name)
        if request.protocol == "v1":
            array = _v1_array(tensor, spec.datatype, where)
            shape: tuple[int, ...] = array.shape
        else:
            if tensor.datatype != spec.datatype:
                raise bad_request(
                    f"{where}.datatype: input {spec.name!r} is {spec.datatype}, "
                    f"got {tensor.datatype}"
                )
            shape = tensor.shape
        problem = shape_problem(shape, spec.shape)
        if problem is not None:
            raise bad_request(f"{where}.shape: input {spec.name!r}: {problem}")
        if request.protocol != "v1":
            array = _array(tensor, spec.datatype, where)
        feeds[spec.name] = array
    if batch_dim:
        first = {a.shape[0] for a in feeds.values()}
        if len(first) > 1:
            raise bad_request(
                f"inputs: the first (batch) dimension differs between inputs: {sorted(first)}"
            )
        rows = first.pop()
    else:
        rows = 1
    signature = tuple(a.shape[1:] for a in feeds.values())
    return OnnxInput(feeds, rows, signature, request.protocol)


def response_for(
    names: Sequence[str], arrays: Sequence[np.ndarray[Any, Any]], protocol: str
) -> InferenceResponse:
    """The answer to one request from its output arrays. v2 data are flat; v1's keep their
    rows (``predictions`` is a list per instance)."""
    outputs: list[Tensor] = []
    for name, array in zip(names, arrays, strict=True):
        datatype = numpy_datatype(array)
        data: Any
        if datatype == "BYTES":
            flat = array.reshape(-1)
            data = array.tolist() if protocol == "v1" else [str(x) for x in flat]
        else:
            data = np.ascontiguousarray(array)
            if protocol != "v1":
                data = data.reshape(-1)
        outputs.append(Tensor(name, datatype, tuple(array.shape), data))
    return InferenceResponse(outputs)


def merge_groups(items: Sequence[OnnxInput]) -> list[list[int]]:
    """Indices of the requests that can run as one, in order of first appearance."""
    groups: dict[tuple[tuple[int, ...], ...], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(item.signature, []).append(i)
    return list(groups.values())


# ------------------------------------------------------------------------------ the shell


class OnnxModel(Model[OnnxInput], SupportsThreadedPredict):
    """An ONNX model served by ONNX Runtime."""

    def __init__(
        self,
        settings: ModelSettings,
        path: str,
        options: OnnxConfig,
        threads: int,
        metrics: Metrics | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings)
        self.path = path
        self.options = options
        self.threads = threads
        self._metrics = metrics
        self._env = dict(os.environ if env is None else env)
        self._session: Any = None
        self._meta = ModelMetadata(platform=PLATFORM)
        self._batch_dim = False
        self._output_names: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlkube-onnx")
        self._invalid: tuple[type[BaseException], ...] = ()
        self.provider = ""

    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._pool, self._load)

    def _load(self) -> None:
        import onnxruntime as ort
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

        self._invalid = (ort_errors.InvalidArgument,)
        so = ort.SessionOptions()
        # Only fatal messages on stderr: a failed run is an exception that the request's
        # answer reports; onnxruntime's own error line per bad request would be a
        # per-request log line.
        so.log_severity_level = 4
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = self.options.inter_op_threads
        # Idle pool threads sleep instead of spinning: spinning burns the pod's CPU quota
        # (and the other workers' cores) between runs, which costs more than it saves here.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.add_session_config_entry("session.inter_op.allow_spinning", "0")
        so.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_LEVELS[self.options.graph_optimization]
        )
        providers, warning = choose_providers(
            self.options.provider, ort.get_available_providers(), gpu_visible(self._env)
        )
        if warning is not None:
            log.warning(warning)
        try:
            session = ort.InferenceSession(self.path, sess_options=so, providers=providers)
        except Exception as exc:
            # Not a model, a corrupt file, an operator this onnxruntime lacks: one line.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(
                f"model.path: {self.path}: not a loadable ONNX model: {first}"
            ) from exc
        inputs = tuple(
            TensorSpec(a.name, datatype_of(a.type, f"input {a.name!r}"), dims(a.shape))
            for a in session.get_inputs()
        )
        outputs = tuple(
            TensorSpec(a.name, datatype_of(a.type, f"output {a.name!r}"), dims(a.shape))
            for a in session.get_outputs()
        )
        in_use = session.get_providers()
        self.provider = in_use[0] if in_use else CPU
        self._batch_dim = batchable(inputs, outputs)
        self._output_names = [t.name for t in outputs]
        self._meta = ModelMetadata(
            platform=PLATFORM,
            inputs=inputs,
            outputs=outputs,
            parameters={
                "execution_provider": self.provider,
                "providers": list(in_use),
                "intra_op_threads": self.threads,
                "graph_optimization": self.options.graph_optimization,
                "batch_dimension": self._batch_dim,
            },
        )
        self._session = session
        if self._metrics is not None:
            self._metrics.set_execution_provider(self.provider)
        log.info(
            "onnx model loaded",
            extra={"path": self.path, "provider": self.provider, "threads": self.threads},
        )

    @property
    def ready(self) -> bool:
        return self._session is not None

    def metadata(self) -> ModelMetadata:
        return self._meta

    def prepare(self, request: InferenceRequest) -> OnnxInput:
        if self._session is None:
            raise ClientError(503, f"model {self.name!r} is not ready yet", {"Retry-After": "1"})
        return prepare_request(request, self._meta.inputs, self._batch_dim)

    def _run(self, feeds: dict[str, np.ndarray[Any, Any]]) -> list[np.ndarray[Any, Any]]:
        try:
            result: list[np.ndarray[Any, Any]] = self._session.run(self._output_names, feeds)
        except self._invalid as exc:
            raise bad_request(f"inputs: the model cannot run on them: {exc}") from exc
        return result

    def _run_one(self, item: OnnxInput) -> InferenceResponse | Exception:
        try:
            return response_for(self._output_names, self._run(item.feeds), item.protocol)
        except Exception as exc:
            return exc

    def _run_batch(self, batch: Sequence[OnnxInput]) -> list[InferenceResponse | Exception]:
        """In the session's thread: the mergeable requests at once, the others alone."""
        groups = merge_groups(batch) if self._batch_dim else [[i] for i in range(len(batch))]
        out: dict[int, InferenceResponse | Exception] = {}
        for group in groups:
            if len(group) == 1:
                out[group[0]] = self._run_one(batch[group[0]])
            else:
                answers = self._run_merged([batch[i] for i in group])
                out.update(zip(group, answers, strict=True))
        return [out[i] for i in range(len(batch))]

    def _run_merged(self, items: Sequence[OnnxInput]) -> list[InferenceResponse | Exception]:
        feeds = {
            name: np.concatenate([item.feeds[name] for item in items]) for name in items[0].feeds
        }
        total = sum(item.rows for item in items)
        try:
            arrays = self._run(feeds)
            if any(a.ndim == 0 or a.shape[0] != total for a in arrays):
                raise ValueError("an output's first dimension is not the batch's")
        except Exception as exc:
            log.debug("merged run of %d requests failed (%s); running each alone", len(items), exc)
            return [self._run_one(item) for item in items]
        answers: list[InferenceResponse | Exception] = []
        start = 0
        for item in items:
            stop = start + item.rows
            answers.append(
                response_for(self._output_names, [a[start:stop] for a in arrays], item.protocol)
            )
            start = stop
        return answers

    @property
    def executor(self) -> ThreadPoolExecutor:
        return self._pool

    def predict_sync(self, batch: Sequence[OnnxInput]) -> list[InferenceResponse | Exception]:
        return self._run_batch(batch)

    async def predict(self, batch: Sequence[OnnxInput]) -> Sequence[InferenceResponse | Exception]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._run_batch, batch)

    async def close(self) -> None:
        self._pool.shutdown(wait=True)
        self._session = None


def build_onnx(config: ServeConfig, context: RuntimeContext) -> Model[Any]:
    from mlkube.serving.config import effective_workers

    assert config.model.path is not None  # guaranteed by config validation
    threads = config.onnx.intra_op_threads
    if threads is None:
        budget = detect_cpu_budget()
        workers, _ = effective_workers(config, budget)
        threads = intra_op_threads(budget, workers)
    return OnnxModel(
        settings_from(config), config.model.path, config.onnx, threads, context.metrics
    )
