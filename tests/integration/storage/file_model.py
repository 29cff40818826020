"""A custom model whose answer comes from its model file, for `mlkube serve --storage-uri`.

``load()`` reads the file at ``settings.path`` (the fetched model) as one number, and
``y = factor * x``: a test that gets the factor back knows the server loaded that file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from mlkube.serving import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    SimpleModel,
    Tensor,
    TensorSpec,
)


class FileModel(SimpleModel):
    factor: float | None = None

    async def load(self) -> None:
        assert self.settings.path is not None, "no model.storage_uri"
        text = await asyncio.to_thread(Path(self.settings.path).read_text)
        self.factor = float(text)

    @property
    def ready(self) -> bool:
        return self.factor is not None

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            self.name, (TensorSpec("x", "FP64", (-1,)),), (TensorSpec("y", "FP64", (-1,)),)
        )

    async def predict(self, batch: Sequence[InferenceRequest]) -> list[InferenceResponse]:
        assert self.factor is not None
        out = []
        for request in batch:
            x = request.inputs["x"].numpy(request.label("x"))
            out.append(InferenceResponse([Tensor("y", "FP64", x.shape, x * self.factor)]))
        return out
