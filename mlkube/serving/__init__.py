"""The mlkube serving runtime (`mlkube serve`): model server, bandit, feature stores.

User models subclass :class:`Model` (or :class:`SimpleModel`) and are served with
``model.format: custom`` and ``model.class: package.module:ClassName``.
"""

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
