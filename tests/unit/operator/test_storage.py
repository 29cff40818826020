"""The S3 Secret a ModelService names, judged before anything is applied."""

from __future__ import annotations

import base64
from typing import Any

from mlkube.api.modelservice import ModelService, spec_problems
from mlkube.operator.storage import s3_secret_name, secret_problems


def spec(**model: Any) -> Any:
    return ModelService.model_validate(
        {
            "metadata": {"name": "recs", "namespace": "ml"},
            "spec": {
                "model": {
                    "name": "m",
                    "version": "v1",
                    "format": "custom",
                    "className": "pkg.m:Model",
                    **model,
                }
            },
        }
    ).spec


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_only_an_s3_uri_with_a_secret_needs_one() -> None:
    assert s3_secret_name(spec(storageUri="s3://bkt/m", storage={"secretName": "s3"})) == "s3"
    assert s3_secret_name(spec(storageUri="s3://bkt/m")) is None
    assert s3_secret_name(spec(storageUri="https://h/m")) is None
    assert s3_secret_name(spec()) is None


def test_a_missing_secret_names_itself_the_namespace_and_the_keys() -> None:
    (problem,) = secret_problems("s3", "ml", None)
    assert problem.startswith("model.storage.secretName: Secret s3 does not exist in namespace ml")
    assert "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY" in problem


def test_a_secret_without_the_credential_keys_says_which() -> None:
    secret = {"data": {"AWS_ACCESS_KEY_ID": b64("id"), "AWS_ENDPOINT_URL": b64("http://x")}}
    assert secret_problems("s3", "ml", secret) == [
        "model.storage.secretName: Secret s3 in namespace ml has no AWS_SECRET_ACCESS_KEY"
    ]
    secret["data"]["AWS_SECRET_ACCESS_KEY"] = b64("s")
    assert secret_problems("s3", "ml", secret) == []


def test_spec_problems_repeat_the_storage_rules_for_objects_past_the_schema() -> None:
    assert spec_problems(spec(storageUri="s3://bkt/m.onnx")) == []
    assert spec_problems(spec(storageUri="gs://b/m")) == [
        "model.storageUri: unsupported storage URI scheme 'gs' in 'gs://b/m': use pvc://, "
        "http://, https:// or s3://"
    ]
    assert spec_problems(spec(storageUri="https://h/m", storage={"secretName": "s"})) == [
        "model.storage.secretName applies only to s3:// URIs"
    ]
    assert spec_problems(spec(storage={"sha256": "0" * 64})) == [
        "model.storage needs model.storageUri"
    ]
