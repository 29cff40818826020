"""The model interface the runtime serves, and the registry that builds one from config.

A model is anything with ``load``, ``ready`` and ``predict`` on a batch; the bandit is one
implementation and a user's class (``model.format: custom``, ``model.class: pkg.mod:Class``)
is served through exactly the same handlers, metrics, batching and shutdown logic.

``prepare`` runs per request *before* batching: it validates and decodes the request so that
one bad request is answered 4xx on its own instead of failing the batch it would have joined.
"""

from __future__ import annotations

import importlib
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar

from mlkube.serving.protocol import FeedbackRequest, InferenceRequest, InferenceResponse

if TYPE_CHECKING:
    from mlkube.serving.config import ServeConfig
    from mlkube.serving.context import RuntimeContext

P = TypeVar("P")


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    optional: bool = False

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        if self.optional:
            out["parameters"] = {"optional": True}
        return out


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """OIP v2 model metadata (``GET /v2/models/{name}``)."""

    platform: str
    inputs: tuple[TensorSpec, ...] = ()
    outputs: tuple[TensorSpec, ...] = ()
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelSettings:
    """What a model is told about itself: from the ``model`` section of the config."""

    name: str
    version: str
    uri: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    """The model's local file or directory (``model.storage_uri``, fetched before the
    workers started), or None when the model has none."""


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    accepted: int
    duplicate: bool


class Model(ABC, Generic[P]):
    """Base class of served models. Subclass it for your own model (see docs/serving.md)."""

    def __init__(self, settings: ModelSettings) -> None:
        self.settings = settings
        self.name = settings.name
        self.version = settings.version

    @abstractmethod
    async def load(self) -> None:
        """Load weights / state. The server is not ready until this returns."""

    @property
    @abstractmethod
    def ready(self) -> bool:
        """True once the model can answer predictions."""

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(platform="mlkube-python")

    @property
    def v1_input(self) -> TensorSpec:
        """The input that KServe v1 ``instances`` map to (the first declared input)."""
        inputs = self.metadata().inputs
        return inputs[0] if inputs else TensorSpec("instances", "BYTES", (-1,))

    @abstractmethod
    def prepare(self, request: InferenceRequest) -> P:
        """Validate and decode one request; raise ClientError (4xx) for bad input."""

    @abstractmethod
    async def predict(self, batch: Sequence[P]) -> Sequence[InferenceResponse | Exception]:
        """Answer a batch of prepared requests, one response each, in order.

        An exception in place of a response fails that request only (the others of the
        batch are answered); an exception raised fails every request of the batch."""

    async def close(self) -> None:
        """Release resources at shutdown."""


class SimpleModel(Model[InferenceRequest]):
    """Convenience base for user models that want the raw request in ``predict``."""

    def prepare(self, request: InferenceRequest) -> InferenceRequest:
        return request


class SupportsFeedback(ABC):
    """A model that learns online from ``:feedback`` requests."""

    @abstractmethod
    async def feedback(self, request: FeedbackRequest) -> FeedbackResult:
        """Apply rewards durably; raise StoreUnavailable when that cannot be done now."""


class SupportsThreadedPredict(ABC):
    """A model whose batch call is synchronous and releases the GIL while it computes (a
    native runtime's session): with dynamic batching on, the batcher runs
    :meth:`predict_sync` in :attr:`executor` directly, so that the event loop gathers the
    next batch while one runs and each batch's answers come back in one callback."""

    @property
    @abstractmethod
    def executor(self) -> Executor:
        """Where the batches run (their order is the executor's)."""

    @abstractmethod
    def predict_sync(self, batch: Sequence[Any]) -> Sequence[InferenceResponse | Exception]:
        """What ``predict`` answers, called in :attr:`executor`'s thread."""


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """A complete JSON response body from a model's raw path."""

    body: bytes
    # Why this answer is degraded (e.g. served from a stale snapshot), or None.
    degraded: str | None = None
    # A binary tensor answer: the length of its JSON part (else None: all JSON).
    json_length: int | None = None


class SupportsRawInfer(ABC):
    """A model with a fast path from request bytes straight to response bytes.

    ``infer_raw`` may decline any request (return None); the request then takes the normal
    decode -> prepare -> predict -> render path. Whatever it does answer must be exactly
    what that path would answer, errors included (so it declines anything it would reject).
    The runtime uses it only when dynamic batching is off.
    """

    @abstractmethod
    def infer_raw(
        self, body: bytes, protocol: Literal["v1", "v2"], json_length: int | None = None
    ) -> RawAnswer | None:
        """The answer to a v2 ``infer`` or v1 ``predict`` body, or None to decline.

        ``json_length``: the body is a binary tensor request whose JSON part is that long."""


ModelFactory = Callable[["ServeConfig", "RuntimeContext"], Model[Any]]

#: ``model.format`` -> "module:function" of its factory, imported only when that format is
#: served (the bandit loads numpy and cffi, which other commands never need). A table of
#: names rather than registration at import keeps the runtimes importing this module,
#: never the other way round.
FORMATS: dict[str, str] = {
    "bandit": "mlkube.serving.bandit:build_bandit",
    "custom": "mlkube.serving.model:build_custom",
    "onnx": "mlkube.serving.onnxrt:build_onnx",
}


def settings_from(config: ServeConfig) -> ModelSettings:
    m = config.model
    return ModelSettings(m.name, m.version, m.uri, dict(m.parameters), m.storage_uri)


class ModelLoadError(Exception):
    """The configured model cannot be built; the message names the config field."""


def _where(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame that raised ``exc``, or ``""``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def resolve_class(path: str) -> type[Model[Any]]:
    """Import ``pkg.module:Class`` (dotted attribute paths allowed after the colon)."""
    module_name, _, attr = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ModelLoadError(f"model.class: cannot import {module_name!r}: {exc}") from exc
    except Exception as exc:
        # The user's module raised while it was imported: one line that says where, not a
        # traceback through the import machinery.
        raise ModelLoadError(
            f"model.class: importing {module_name!r} raised {type(exc).__name__}: {exc}"
            f"{_where(exc)}"
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ModelLoadError(f"model.class: {module_name!r} has no {attr!r}") from exc
    if not isinstance(obj, type) or not issubclass(obj, Model):
        raise ModelLoadError(f"model.class: {path!r} is not a subclass of mlkube.serving.Model")
    missing = sorted(getattr(obj, "__abstractmethods__", ()))
    if missing:
        raise ModelLoadError(f"model.class: {path!r} does not implement {', '.join(missing)}")
    return obj


def build_custom(config: ServeConfig, context: RuntimeContext) -> Model[Any]:
    assert config.model.class_path is not None  # guaranteed by config validation
    cls = resolve_class(config.model.class_path)
    return cls(settings_from(config))


def build_model(config: ServeConfig, context: RuntimeContext) -> Model[Any]:
    target = FORMATS.get(config.model.format)
    if target is None:
        raise ModelLoadError(f"model.format: no model registered as {config.model.format!r}")
    module, function = target.split(":")
    factory: ModelFactory = getattr(importlib.import_module(module), function)
    return factory(config, context)
