"""The mlkube serving runtime (`mlkube serve`): model server, bandit, feature stores.

User models subclass :class:`Model` (or :class:`SimpleModel`) and are served with
``model.format: custom`` and ``model.class: package.module:ClassName``.

The public names below are imported on first use (PEP 562), not with the package: the
operator and the API import the runtime's settings model (``mlkube.serving.config``, the
one contract between the halves) and must not pay for numpy and the protocol code on the
way.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlkube.serving.model import (
        FeedbackResult,
        Model,
        ModelMetadata,
        ModelSettings,
        SimpleModel,
        SupportsFeedback,
        TensorSpec,
    )
    from mlkube.serving.protocol import (
        ClientError,
        FeedbackRequest,
        InferenceRequest,
        InferenceResponse,
        Tensor,
    )

_HOMES = {
    "FeedbackResult": "mlkube.serving.model",
    "Model": "mlkube.serving.model",
    "ModelMetadata": "mlkube.serving.model",
    "ModelSettings": "mlkube.serving.model",
    "SimpleModel": "mlkube.serving.model",
    "SupportsFeedback": "mlkube.serving.model",
    "TensorSpec": "mlkube.serving.model",
    "ClientError": "mlkube.serving.protocol",
    "FeedbackRequest": "mlkube.serving.protocol",
    "InferenceRequest": "mlkube.serving.protocol",
    "InferenceResponse": "mlkube.serving.protocol",
    "Tensor": "mlkube.serving.protocol",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOMES})


__all__ = [
    "ClientError",
    "FeedbackRequest",
    "FeedbackResult",
    "InferenceRequest",
    "InferenceResponse",
    "Model",
    "ModelMetadata",
    "ModelSettings",
    "SimpleModel",
    "SupportsFeedback",
    "Tensor",
    "TensorSpec",
]
