"""A model version that misbehaves on purpose, for releases on the cluster tier.

Built only on the public model interface (``mlkube.serving.SimpleModel``, loaded as
``format: custom`` with ``className: flaky_model:FlakyModel``) and baked into an image
derived from the project's own (``Containerfile`` next to this file), the way a user ships
a custom model. Two knobs, read from the pod's environment (``spec.runtime.env``), so that
changing either is a new revision that goes through the canary like any release:

* ``FLAKY_FAIL_SHARE`` (default 0): the share of requests that raise inside ``predict``,
  which the runtime answers with a 500, as it would a real bug;
* ``FLAKY_DELAY_MS`` (default 0): latency added to every answer.

The answer is one FP64 output ``y`` equal to the input ``x``.
"""

from __future__ import annotations

import asyncio
import os
import random
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


class InjectedFailure(RuntimeError):
    """The failure this model was configured to produce."""


class FlakyModel(SimpleModel):
    async def load(self) -> None:
        self.fail_share = float(os.environ.get("FLAKY_FAIL_SHARE") or 0)
        self.delay = float(os.environ.get("FLAKY_DELAY_MS") or 0) / 1000
        if not 0 <= self.fail_share <= 1 or self.delay < 0:
            raise ValueError("FLAKY_FAIL_SHARE must be in [0, 1] and FLAKY_DELAY_MS >= 0")
        self.rng = random.Random()
        self.loaded = True

    @property
    def ready(self) -> bool:
        return getattr(self, "loaded", False)

    def metadata(self) -> ModelMetadata:
        return ModelMetadata(
            platform="flaky",
            inputs=(TensorSpec("x", "FP64", (-1,)),),
            outputs=(TensorSpec("y", "FP64", (-1,)),),
        )

    async def predict(self, batch: Sequence[InferenceRequest]) -> list[InferenceResponse]:
        if self.delay:
            await asyncio.sleep(self.delay)
        out = []
        for request in batch:
            if self.rng.random() < self.fail_share:
                raise InjectedFailure(f"{self.version}: injected failure")
            if "x" not in request.inputs:
                raise ClientError(400, "inputs: an input named x is required")
            x = request.inputs["x"].numpy(request.label("x"))
            out.append(InferenceResponse([Tensor("y", "FP64", x.shape, x)]))
        return out
