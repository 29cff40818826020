"""A served model whose behaviour each request scripts, for the real-Prometheus test.

``mlkube serve`` loads it as ``format: custom`` (``scripted_model:ScriptedModel`` with this
directory on PYTHONPATH).  A request with ``parameters.fail`` raises inside ``predict``
(the runtime answers 500), ``parameters.sleep_ms`` delays the answer: so the test knows
the true success rate and latency distribution each revision served.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from mlkube.serving.model import SimpleModel
from mlkube.serving.protocol import InferenceRequest, InferenceResponse, Tensor


class ScriptedFailure(RuntimeError):
    pass


class ScriptedModel(SimpleModel):
    _loaded = False

    async def load(self) -> None:
        self._loaded = True

    @property
    def ready(self) -> bool:
        return self._loaded

    async def predict(self, batch: Sequence[InferenceRequest]) -> Sequence[InferenceResponse]:
        out = []
        for request in batch:
            if request.parameters.get("fail"):
                raise ScriptedFailure("scripted failure")
            delay = float(request.parameters.get("sleep_ms", 0)) / 1000
            if delay:
                await asyncio.sleep(delay)
            out.append(InferenceResponse([Tensor("score", "FP32", (1,), [1.0])]))
        return out
