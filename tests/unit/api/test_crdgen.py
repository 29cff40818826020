"""The CRD generator: structural output from pydantic models, determinism, drift check."""

from __future__ import annotations

import dataclasses
import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pytest
import yaml
from pydantic import ConfigDict, Field

from mlkube.api import crdgen
from mlkube.api.crdgen import SchemaError, build_crd, generate, model_schema
from mlkube.api.schema import (
    CustomResource,
    IntOrString,
    Kube,
    KubeModel,
    PrinterColumn,
    Quantity,
    Scale,
    kube,
    rule,
)

ROOT = Path(__file__).resolve().parents[3]


class Colour(StrEnum):
    RED = "red"
    BLUE = "blue"


class Port(KubeModel):
    """A named port."""

    name: str
    number: int = Field(ge=1, le=65535)


class Window(KubeModel):
    """A closed interval."""

    model_config = ConfigDict(
        json_schema_extra=kube(
            validations=[rule("self.low <= self.high", "low must not exceed high")]
        )
    )

    low: int = 0
    """Lower bound."""
    high: int = Field(default=1, gt=0, description="Upper bound.")


class WidgetSpec(KubeModel):
    """A widget that does
    widget things.

    Second paragraph is not part of the kind's description."""

    replicas: int = Field(default=1, ge=0)
    colour: Colour = Colour.RED
    window: Window | None = None
    """An optional window."""
    always: Window = Field(default_factory=Window)
    memory: Quantity | None = None
    port: IntOrString = 8080
    ports: list[Port] = Field(
        default_factory=list, json_schema_extra=kube(list_type="map", list_map_keys=["name"])
    )
    template: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    anything: Any = None
    tags: set[str] = Field(default_factory=set)
    mode: str = Field(default="fixed", json_schema_extra={"const": "fixed"})
    nullable_note: str | None = Field(default=None, json_schema_extra=kube(nullable=True))


class WidgetStatus(KubeModel):
    replicas: int | None = None
    selector: str | None = None


WIDGET = CustomResource(
    kind="Widget",
    plural="widgets",
    short_names=("wdg",),
    spec=WidgetSpec,
    status=WidgetStatus,
    printer_columns=(PrinterColumn("Replicas", ".status.replicas", type="integer"),),
    scale=Scale(),
    validations=(rule("size(self.metadata.name) < 10", "name must be short"),),
)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return build_crd(WIDGET)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def _walk(node: Any) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if isinstance(node, dict):
        out.append(node)
        for value in node.values():
            out += _walk(value)
    elif isinstance(node, list):
        for value in node:
            out += _walk(value)
    return out


def test_refs_are_inlined_and_nothing_pydantic_specific_is_left(schema: dict[str, Any]) -> None:
    for node in _walk(schema):
        assert not {"$ref", "$defs", "allOf", "oneOf", "title", "const"} & set(node), node
        if "anyOf" in node:
            assert node.get("x-kubernetes-int-or-string") is True, node


def test_optional_fields_are_plain_and_not_required(schema: dict[str, Any]) -> None:
    window = schema["properties"]["spec"]["properties"]["window"]
    assert window["type"] == "object"
    assert "nullable" not in window
    assert window["description"] == "An optional window."
    assert "window" not in schema["properties"]["spec"].get("required", [])
    assert schema["properties"]["spec"]["properties"]["nullableNote"]["nullable"] is True


def test_model_rules_and_descriptions_survive_inlining(schema: dict[str, Any]) -> None:
    always = schema["properties"]["spec"]["properties"]["always"]
    assert always["x-kubernetes-validations"] == [
        {"rule": "self.low <= self.high", "message": "low must not exceed high"}
    ]
    assert always["properties"]["low"]["description"] == "Lower bound."
    assert always["properties"]["high"] == {
        "description": "Upper bound.",
        "type": "integer",
        "default": 1,
        "minimum": 0,
        "exclusiveMinimum": True,
    }


def test_kubernetes_shapes(schema: dict[str, Any]) -> None:
    spec = schema["properties"]["spec"]["properties"]
    assert spec["colour"] == {"type": "string", "default": "red", "enum": ["red", "blue"]}
    assert spec["mode"]["enum"] == ["fixed"]
    assert spec["memory"]["x-kubernetes-int-or-string"] is True
    assert spec["memory"]["anyOf"] == [{"type": "integer"}, {"type": "string"}]
    assert "pattern" in spec["memory"]
    assert spec["port"]["default"] == 8080
    assert spec["ports"]["x-kubernetes-list-type"] == "map"
    assert spec["ports"]["x-kubernetes-list-map-keys"] == ["name"]
    assert spec["template"] == {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert spec["labels"] == {"type": "object", "additionalProperties": {"type": "string"}}
    assert spec["anything"] == {"x-kubernetes-preserve-unknown-fields": True}
    assert spec["tags"]["x-kubernetes-list-type"] == "set"
    assert "uniqueItems" not in spec["tags"]


def test_crd_metadata(schema: dict[str, Any]) -> None:
    crd = build_crd(WIDGET)
    assert crd["metadata"]["name"] == "widgets.mlkube.dev"
    assert crd["spec"]["names"] == {
        "kind": "Widget",
        "listKind": "WidgetList",
        "plural": "widgets",
        "singular": "widget",
        "shortNames": ["wdg"],
        "categories": ["mlkube"],
    }
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {
        "status": {},
        "scale": {
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.replicas",
            "labelSelectorPath": ".status.selector",
        },
    }
    assert schema["description"] == "A widget that does widget things."
    assert schema["x-kubernetes-validations"][0]["message"] == "name must be short"
    assert schema["required"] == ["spec"]


def test_unions_that_cannot_be_structural_are_refused() -> None:
    class Bad(KubeModel):
        value: int | str

    with pytest.raises(SchemaError, match=r"Bad.value: a union of 2 types"):
        model_schema(Bad)


def test_output_is_deterministic_yaml_without_aliases() -> None:
    first = crdgen.render(build_crd(WIDGET))
    second = crdgen.render(build_crd(WIDGET))
    assert first == second
    assert "&id" not in first
    assert "*id" not in first
    assert yaml.safe_load(first.split("---\n", 1)[1]) == build_crd(WIDGET)


def test_committed_crds_match_the_models() -> None:
    """Fails when someone edits a model without running `mlkube crds --output-dir crds/`."""
    problems = crdgen.check(ROOT / "crds", generate())
    assert not problems, "\n".join(problems)


def test_check_reports_drift_and_write_fixes_it(tmp_path: Path, capsys: Any) -> None:
    assert crdgen.main(["--output-dir", str(tmp_path)]) == 0
    assert crdgen.main(["--output-dir", str(tmp_path), "--check"]) == 0
    target = tmp_path / "modelservices.mlkube.dev.yaml"
    target.write_text(target.read_text().replace("msvc", "ms"))
    (tmp_path / "gone.mlkube.dev.yaml").write_text("# Generated by `mlkube crds` x\n")
    capsys.readouterr()
    assert crdgen.main(["--output-dir", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert "modelservices.mlkube.dev.yaml (committed)" in err
    assert "-    - ms\n" in err
    assert "gone.mlkube.dev.yaml: no registered model generates it" in err
    assert crdgen.main(["--output-dir", str(tmp_path)]) == 0
    assert not (tmp_path / "gone.mlkube.dev.yaml").exists()
    assert crdgen.main(["--output-dir", str(tmp_path), "--check"]) == 0


def test_stdout_holds_every_registered_crd(capsys: Any) -> None:
    assert crdgen.main([]) == 0
    docs = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    names = {d["metadata"]["name"] for d in docs}
    assert "modelservices.mlkube.dev" in names
    assert all(d["kind"] == "CustomResourceDefinition" for d in docs)


PortNumber = Annotated[
    int, Field(ge=1, le=65535), Kube.of(validations=[rule("self != 22", "not ssh")])
]


class Ports(KubeModel):
    one: PortNumber
    many: list[PortNumber] = Field(default_factory=list)


def test_kube_marker_travels_with_a_reusable_type() -> None:
    schema = model_schema(Ports)
    assert schema["properties"]["one"]["x-kubernetes-validations"] == [
        {"rule": "self != 22", "message": "not ssh"}
    ]
    many = schema["properties"]["many"]["items"]
    assert many["x-kubernetes-validations"][0]["message"] == "not ssh"
    assert many["maximum"] == 65535


class WindowSpec(KubeModel):
    size: int = 1


def test_registering_a_different_definition_under_one_name_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mlkube.api import schema

    monkeypatch.setattr(schema, "_REGISTRY", dict(schema._REGISTRY))  # keep the real one clean
    schema.register(WIDGET)
    schema.register(WIDGET)  # the same definition again (a re-import) is harmless
    with pytest.raises(ValueError, match=r"widgets\.mlkube\.dev is registered twice"):
        schema.register(CustomResource(kind="Widget", plural="widgets", spec=WindowSpec))


def test_name_rules_sit_on_metadata_name() -> None:
    """So the API server reports `metadata.name: Invalid value: "<name>": ...`."""
    named = CustomResource(
        kind="Widget",
        plural="widgets",
        spec=WidgetSpec,
        name_validations=(
            rule(
                "self.size() <= 20",
                "name must be at most 20 characters",
                reason="FieldValueInvalid",
            ),
        ),
    )
    root = build_crd(named)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert root["properties"]["metadata"] == {
        "type": "object",
        "properties": {
            "name": {
                "type": "string",
                "x-kubernetes-validations": [
                    {
                        "rule": "self.size() <= 20",
                        "message": "name must be at most 20 characters",
                        "reason": "FieldValueInvalid",
                    }
                ],
            }
        },
    }
    # without name rules metadata stays free-form
    plain = build_crd(WIDGET)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert plain["properties"]["metadata"] == {"type": "object"}


def test_spec_defaults_can_be_left_to_the_controller() -> None:
    """``spec_defaults=False``: no ``default`` anywhere under spec (the stored object keeps
    what its author wrote); the spec's shape is unchanged."""

    def spec_of(resource: Any) -> dict[str, Any]:
        root = build_crd(resource)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        return dict(root["properties"]["spec"])

    assert '"default"' in json.dumps(spec_of(WIDGET))
    bare = spec_of(dataclasses.replace(WIDGET, spec_defaults=False))
    assert '"default"' not in json.dumps(bare)
    assert bare == crdgen.without_defaults(spec_of(WIDGET))
    assert bare["properties"].keys() == spec_of(WIDGET)["properties"].keys()
