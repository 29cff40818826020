"""A served model for the gRPC tests, whose load and answers the test controls.

``model.class: tests.support.gated_model:GatedModel`` (the repository root on the path).
``load()`` waits until the file named by the model parameter ``gate`` exists (no parameter:
loads at once), so a test sees the server before and after the model is ready. Each request
scripts its answer with request parameters: ``sleep_ms`` delays it, ``fail`` raises inside
``predict`` (a server error), ``reject`` raises a 422 ClientError. Otherwise ``y = 2 * x``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from mlkube.serving import (
    ClientError,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    SimpleModel,
    Tensor,
    TensorSpec,
)


class GatedModel(SimpleModel):
    loaded = False

    async def load(self) -> None:
        gate = self.settings.parameters.get("gate")
        while gate and not await asyncio.to_thread(os.path.exists, gate):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        self.loaded = True

    @property
    def ready(self) -> bool:
        return self.loaded

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            "gated", (TensorSpec("x", "FP64", (-1,)),), (TensorSpec("y", "FP64", (-1,)),)
        )

    async def predict(self, batch: Sequence[InferenceRequest]) -> list[InferenceResponse]:
        out = []
        for request in batch:
            params = request.parameters
            if params.get("sleep_ms"):
                await asyncio.sleep(float(params["sleep_ms"]) / 1000)
            if params.get("fail"):
                raise RuntimeError("scripted failure")
            if params.get("reject"):
                raise ClientError(422, "parameters.reject: scripted rejection")
            x = request.inputs["x"].numpy(request.label("x"))
            out.append(InferenceResponse([Tensor("y", "FP64", x.shape, x * 2)]))
        return out
