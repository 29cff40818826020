"""A user's `module:Class` model is served through the same handlers."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path
from typing import Any

import orjson
import pytest

from mlkube.serving.model import ModelLoadError, resolve_class

USER_MODEL = textwrap.dedent(
    '''
    from collections.abc import Sequence

    import numpy as np

    from mlkube.serving import (
        ClientError, InferenceRequest, InferenceResponse, ModelMetadata, SimpleModel, Tensor,
        TensorSpec,
    )


    class Doubler(SimpleModel):
        """Multiplies an FP64 input by the `factor` model parameter."""

        loaded = False

        async def load(self) -> None:
            self.factor = float(self.settings.parameters.get("factor", 2))
            self.loaded = True

        @property
        def ready(self) -> bool:
            return self.loaded

        def metadata(self) -> ModelMetadata:
            return ModelMetadata("user", (TensorSpec("x", "FP64", (-1,)),), (TensorSpec("y", "FP64", (-1,)),))

        async def predict(self, batch: Sequence[InferenceRequest]) -> list[InferenceResponse]:
            out = []
            for request in batch:
                if "x" not in request.inputs:
                    raise ClientError(400, "inputs: missing input 'x'")
                x = request.inputs["x"].numpy(request.label("x"))
                out.append(InferenceResponse([Tensor("y", "FP64", x.shape, x * self.factor)]))
            return out


    class NotAModel:
        pass


    class Incomplete(SimpleModel):
        @property
        def ready(self) -> bool:
            return True
    '''
)


@pytest.fixture
def user_module(tmp_path: Path) -> Any:
    (tmp_path / "user_models_for_test.py").write_text(USER_MODEL)
    sys.path.insert(0, str(tmp_path))
    yield "user_models_for_test"
    sys.path.remove(str(tmp_path))
    sys.modules.pop("user_models_for_test", None)


async def test_custom_model_served_over_v2_and_v1(
    user_module: str, make_client: Any, config: Any
) -> None:
    cfg = config(
        model={
            "name": "doubler",
            "format": "custom",
            "class": f"{user_module}:Doubler",
            "parameters": {"factor": 3},
        }
    )
    client = await make_client(cfg)
    body = {"inputs": [{"name": "x", "datatype": "FP64", "shape": [3], "data": [1, 2, 3]}]}
    resp = await client.post("/v2/models/doubler/infer", data=orjson.dumps(body))
    assert resp.status == 200
    out = await resp.json()
    assert out["outputs"][0]["data"] == [3.0, 6.0, 9.0]
    resp = await client.post("/v1/models/doubler:predict", data=orjson.dumps({"instances": [0.5]}))
    assert await resp.json() == {"predictions": [1.5]}
    body["inputs"][0]["data"] = ["a", "b", "c"]
    resp = await client.post("/v2/models/doubler/infer", data=orjson.dumps(body))
    assert resp.status == 400
    assert (await resp.json())["error"].startswith("inputs[0].data: not valid FP64")
    resp = await client.post("/v1/models/doubler:feedback", data=b"{}")
    assert resp.status == 404
    assert "does not accept feedback" in (await resp.json())["error"]


def test_resolve_class_errors_name_the_field(user_module: str) -> None:
    assert resolve_class(f"{user_module}:Doubler").__name__ == "Doubler"
    with pytest.raises(ModelLoadError, match=r"model\.class: .* has no 'Missing'"):
        resolve_class(f"{user_module}:Missing")
    with pytest.raises(ModelLoadError, match=r"is not a subclass of mlkube\.serving\.Model"):
        resolve_class(f"{user_module}:NotAModel")
    with pytest.raises(ModelLoadError, match=r"'.*:Incomplete' does not implement load, predict"):
        resolve_class(f"{user_module}:Incomplete")
