"""``mlkube crds``: turn the pydantic models in ``mlkube.api`` into CRD manifests.

How a kind declares itself
==========================

Models derive from ``mlkube.api.schema.KubeModel`` (camelCase aliases; attribute
docstrings and ``Field(description=...)`` become ``description``). A root kind registers
its CRD-level metadata once, at import time, in its own module under ``mlkube/api/``::

    from pydantic import Field, ConfigDict
    from mlkube.api.schema import (
        CustomResource, KubeModel, Kube, PrinterColumn, Quantity, Scale, kube, register, rule,
    )

    class WidgetSpec(KubeModel):
        \"\"\"What the user asks for.\"\"\"

        model_config = ConfigDict(json_schema_extra=kube(validations=[   # rules on the object
            rule("self.min <= self.max", "min must not exceed max"),
        ]))
        replicas: int = Field(default=1, ge=0, le=1000)
        \"\"\"Number of pods.\"\"\"          # attribute docstring -> description
        memory: Quantity | None = None   # int-or-string + quantity pattern
        ports: list[Port] = Field(        # list-type map keyed by name
            default_factory=list,
            json_schema_extra=kube(list_type="map", list_map_keys=["name"], maxItems=16),
        )
        template: dict[str, Any] = Field(  # free-form: preserve-unknown-fields
            default_factory=dict, json_schema_extra=kube(preserve_unknown_fields=True))

    WIDGET = register(CustomResource(
        kind="Widget", plural="widgets", short_names=("wdg",), categories=("mlkube",),
        spec=WidgetSpec, status=WidgetStatus,
        printer_columns=(PrinterColumn("Ready", ".status.conditions[?(@.type=='Ready')].status"),
                         PrinterColumn("URL", ".status.url", priority=1)),
        scale=Scale(".spec.replicas", ".status.replicas", ".status.selector"),
        name_validations=(rule("self.size() <= 56", "name must be at most 56 characters"),),
    ))

* ``kube(...)`` returns the ``x-kubernetes-*`` keywords for one node: ``validations``
  (a list of ``rule(expr, message, reason=..., field_path=..., message_expression=...)``),
  ``preserve_unknown_fields``, ``int_or_string``, ``embedded_resource``, ``list_type`` /
  ``list_map_keys``, ``map_type``, ``nullable`` and verbatim OpenAPI keywords
  (``maxLength=63``, ``pattern=...``). Put it in ``Field(json_schema_extra=...)`` for a field,
  in ``model_config`` for a model, or use ``Annotated[T, Kube.of(...)]`` for a reusable type.
* ``validations=`` are rules on the whole object; ``name_validations=`` are rules on
  ``metadata.name`` (``self`` is the name string), which the API server then reports at
  ``metadata.name`` with the value, not at ``<nil>``.
* The status subresource is added whenever ``status=`` is given; ``scale=`` adds scale.
* ``spec_defaults=False`` leaves every ``default`` out of the spec's schema: the API server
  then stores only what the author wrote, and the controller applies the model's defaults
  in memory when it reads the object.
* Every module in the ``mlkube.api`` package is imported before generation, so a new kind
  only has to call ``register`` in its own module.

What the generator does to pydantic's JSON Schema
=================================================

It inlines every ``$ref``; turns ``Optional[X]`` into plain ``X`` that is simply not
``required`` (the API server prunes explicit nulls; ``kube(nullable=True)`` opts into
``nullable``); turns ``const`` into a one-value ``enum``, JSON-Schema-2020 numeric
``exclusiveMinimum`` into OpenAPI 3.0's boolean form, ``set[...]`` into
``x-kubernetes-list-type: set``, ``dict[str, Any]`` into ``x-kubernetes-preserve-unknown-fields``;
drops ``title``, ``examples``, null defaults and formats Kubernetes does not know; and
rejects what cannot be structural (unions other than int-or-string). Keys are emitted in
a fixed order so the output is byte-for-byte reproducible.

Usage: ``mlkube crds`` (all CRDs to stdout), ``mlkube crds --output-dir crds/`` (one file
per CRD, ``<plural>.<group>.yaml``), ``mlkube crds --output-dir crds/ --check`` (exit 1 and
name the files that differ from what the models produce).
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import pkgutil
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mlkube.api.schema import CustomResource, JsonDict, registered

# Keyword order inside one schema node: what a reader wants first comes first.
_KEY_ORDER = (
    "description",
    "type",
    "format",
    "nullable",
    "default",
    "enum",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "multipleOf",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "anyOf",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "x-kubernetes-int-or-string",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
)
_DROP = {"title", "examples", "discriminator", "readOnly", "writeOnly", "deprecated", "$defs"}
# Formats the API server validates; anything else pydantic emits (e.g. "uri") is dropped
# because unknown formats only produce warnings and mislead readers.
_KNOWN_FORMATS = {
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "duration",
    "password",
    "uuid",
    "hostname",
    "ipv4",
    "ipv6",
    "cidr",
    "mac",
    "email",
}


class SchemaError(ValueError):
    """A model whose schema cannot be expressed structurally; names the offending path."""


def _discover() -> None:
    """Import every module of ``mlkube.api`` so that each registers its kinds."""
    import mlkube.api as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.name != "crdgen":
            importlib.import_module(f"{package.__name__}.{info.name}")


_RULE_ORDER = ("rule", "message", "messageExpression", "reason", "fieldPath", "optionalOldSelf")


def _ordered(node: JsonDict) -> JsonDict:
    rank = {key: i for i, key in enumerate(_KEY_ORDER)}
    out = {key: node[key] for key in sorted(node, key=lambda k: (rank.get(k, len(rank)), k))}
    if "x-kubernetes-validations" in out:
        out["x-kubernetes-validations"] = [
            {key: r[key] for key in _RULE_ORDER if key in r}
            for r in out["x-kubernetes-validations"]
        ]
    return out


class _Dumper(yaml.SafeDumper):
    """Never emits anchors/aliases: a shared sub-schema must be spelled out in full."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _merge(base: JsonDict, over: JsonDict) -> JsonDict:
    """``over``'s keys win, except that validation lists are concatenated."""
    out = dict(base)
    for key, value in over.items():
        if key == "x-kubernetes-validations" and key in out:
            out[key] = [*out[key], *value]
        else:
            out[key] = value
    return out


def _resolve(node: JsonDict, defs: JsonDict, path: str) -> JsonDict:
    """Inline ``$ref`` and single-element ``allOf`` wrappers, keeping sibling keywords."""
    while True:
        if "$ref" in node:
            ref = node["$ref"]
            name = ref.rsplit("/", 1)[-1]
            if name not in defs:
                raise SchemaError(f"{path}: unresolvable $ref {ref}")
            siblings = {k: v for k, v in node.items() if k != "$ref"}
            node = _merge(defs[name], siblings)
            continue
        if "allOf" in node and len(node["allOf"]) == 1:
            siblings = {k: v for k, v in node.items() if k != "allOf"}
            node = _merge(node["allOf"][0], siblings)
            continue
        return node


def _tidy(text: str) -> str:
    """Unwrap docstring line breaks (keep paragraph breaks) so `kubectl explain` reflows."""
    paragraphs = re.split(r"\n\s*\n", text.strip())
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def _structural(node: JsonDict, defs: JsonDict, path: str) -> JsonDict:
    node = _resolve(node, defs, path)
    node = {k: v for k, v in node.items() if k not in _DROP}

    if "allOf" in node:
        raise SchemaError(f"{path}: allOf with several members is not supported")
    if "oneOf" in node:
        raise SchemaError(f"{path}: oneOf (tagged unions) cannot be made structural")

    if "anyOf" in node:
        branches = [_resolve(b, defs, path) for b in node["anyOf"]]
        non_null = [b for b in branches if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if rest.get("x-kubernetes-int-or-string") or (
            len(non_null) == 1 and non_null[0].get("x-kubernetes-int-or-string")
        ):
            inner = non_null[0] if len(non_null) == 1 and "anyOf" in non_null[0] else {}
            merged = _merge({k: v for k, v in inner.items() if k != "anyOf"}, rest)
            merged.pop("type", None)
            merged["anyOf"] = [{"type": "integer"}, {"type": "string"}]
            merged["x-kubernetes-int-or-string"] = True
            if merged.get("default") is None:
                merged.pop("default", None)
            return _ordered(merged)
        if len(non_null) != 1:
            raise SchemaError(
                f"{path}: a union of {len(non_null)} types is not structural; use one type, "
                "IntOrString, or free-form kube(preserve_unknown_fields=True)"
            )
        node = _merge(_resolve(non_null[0], defs, path), rest)
        return _structural(node, defs, path)

    if node.get("type") == "null":
        raise SchemaError(f"{path}: a field that can only be null")
    if isinstance(node.get("type"), list):
        raise SchemaError(f"{path}: several types {node['type']} are not structural")

    out: JsonDict = {}
    for key, value in node.items():
        if key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            bound = "minimum" if key == "exclusiveMinimum" else "maximum"
            out[bound] = value
            out[key] = True
        elif key == "uniqueItems":
            if value:
                out.setdefault("x-kubernetes-list-type", "set")
        elif key == "format":
            if value in _KNOWN_FORMATS:
                out[key] = value
        elif key == "description":
            out[key] = _tidy(value)
        elif key == "default":
            if value is not None:
                out[key] = value
        elif key == "properties":
            out[key] = {
                name: _structural(child, defs, f"{path}.{name}") for name, child in value.items()
            }
        elif key == "items":
            out[key] = _structural(value, defs, f"{path}[]")
        elif key == "additionalProperties":
            if value is True or value == {}:
                out["x-kubernetes-preserve-unknown-fields"] = True
            elif isinstance(value, dict):
                out[key] = _structural(value, defs, f"{path}{{}}")
            # ``False`` (extra="forbid") is what pruning already does: drop it.
        elif key in ("propertyNames", "patternProperties", "additionalItems", "prefixItems"):
            raise SchemaError(f"{path}: {key} is not allowed in a structural schema")
        else:
            out[key] = value

    shapeless = not (set(node) & {"type", "properties", "items", "enum", "const", "anyOf"})
    if shapeless and not out.get("x-kubernetes-int-or-string"):
        out["x-kubernetes-preserve-unknown-fields"] = True  # ``Any``
    if "type" not in out and "properties" in out:
        out["type"] = "object"
    if out.get("type") == "object" and "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{path}: properties and additionalProperties together")
    if "type" not in out and not (
        out.get("x-kubernetes-preserve-unknown-fields") or out.get("x-kubernetes-int-or-string")
    ):
        raise SchemaError(f"{path}: no type (add a type or kube(preserve_unknown_fields=True))")
    if "required" in out and not out["required"]:
        del out["required"]
    return _ordered(out)


def model_schema(model: type[Any], path: str = "") -> JsonDict:
    """The structural OpenAPI v3 schema of one pydantic model, fully inlined."""
    raw: JsonDict = model.model_json_schema(by_alias=True, mode="validation")
    defs: JsonDict = raw.pop("$defs", {})
    return _structural(raw, defs, path or model.__name__)


def without_defaults(node: Any) -> Any:
    """``node`` with every ``default`` keyword removed, at any depth."""
    if isinstance(node, dict):
        return {k: without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [without_defaults(v) for v in node]
    return node


def _description(resource: CustomResource) -> str:
    if resource.description:
        return resource.description
    doc = (resource.spec.__doc__ or "").strip()
    return _tidy(doc.split("\n\n", 1)[0]) if doc else resource.kind


def _metadata_schema(resource: CustomResource) -> JsonDict:
    """``metadata`` stays free-form (the API server validates it), except that rules on
    the name sit on ``metadata.name`` itself (structural schemas allow restricting only
    ``name`` and ``generateName`` there)."""
    if not resource.name_validations:
        return {"type": "object"}
    name = _ordered(
        {
            "type": "string",
            "x-kubernetes-validations": [dict(r) for r in resource.name_validations],
        }
    )
    return {"type": "object", "properties": {"name": name}}


def build_crd(resource: CustomResource) -> JsonDict:
    """The CustomResourceDefinition object for one registered kind."""
    properties: JsonDict = {
        "apiVersion": {
            "description": "APIVersion defines the versioned schema of this representation "
            "of an object.",
            "type": "string",
        },
        "kind": {
            "description": "Kind is a string value representing the REST resource this "
            "object represents.",
            "type": "string",
        },
        "metadata": _metadata_schema(resource),
        "spec": model_schema(resource.spec, "spec"),
    }
    if not resource.spec_defaults:
        properties["spec"] = without_defaults(properties["spec"])
    if resource.status is not None:
        properties["status"] = model_schema(resource.status, "status")
    root: JsonDict = {
        "description": _description(resource),
        "type": "object",
        "properties": properties,
    }
    if resource.spec_required:
        root["required"] = ["spec"]
    if resource.validations:
        root["x-kubernetes-validations"] = [dict(r) for r in resource.validations]
    root = _ordered(_merge(root, resource.extra))

    version: JsonDict = {"name": resource.version, "served": True, "storage": True}
    if resource.printer_columns:
        columns = []
        for col in resource.printer_columns:
            entry: JsonDict = {"name": col.name, "type": col.type, "jsonPath": col.json_path}
            if col.format:
                entry["format"] = col.format
            if col.description:
                entry["description"] = col.description
            if col.priority:
                entry["priority"] = col.priority
            columns.append(entry)
        version["additionalPrinterColumns"] = columns
    version["schema"] = {"openAPIV3Schema": root}
    subresources: JsonDict = {}
    if resource.status is not None:
        subresources["status"] = {}
    if resource.scale is not None:
        scale: JsonDict = {
            "specReplicasPath": resource.scale.spec_replicas_path,
            "statusReplicasPath": resource.scale.status_replicas_path,
        }
        if resource.scale.label_selector_path:
            scale["labelSelectorPath"] = resource.scale.label_selector_path
        subresources["scale"] = scale
    if subresources:
        version["subresources"] = subresources

    names: JsonDict = {
        "kind": resource.kind,
        "listKind": f"{resource.kind}List",
        "plural": resource.plural,
        "singular": resource.singular or resource.kind.lower(),
    }
    if resource.short_names:
        names["shortNames"] = list(resource.short_names)
    if resource.categories:
        names["categories"] = list(resource.categories)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": resource.name,
            "labels": {"app.kubernetes.io/part-of": "mlkube"},
        },
        "spec": {
            "group": resource.group,
            "names": names,
            "scope": resource.scope,
            "versions": [version],
        },
    }


def render(crd: JsonDict) -> str:
    """Deterministic YAML for one CRD (insertion order kept, long lines not folded)."""
    header = "# Generated by `mlkube crds` from the pydantic models in mlkube/api. Do not edit.\n"
    body = yaml.dump(crd, Dumper=_Dumper, sort_keys=False, width=10_000, allow_unicode=True)
    return header + "---\n" + body


def generate() -> dict[str, str]:
    """File name -> YAML text for every registered kind."""
    _discover()
    return {f"{r.name}.yaml": render(build_crd(r)) for r in registered()}


def check(output_dir: Path, files: dict[str, str]) -> list[str]:
    """Human-readable differences between ``output_dir`` and ``files``; empty if none."""
    problems: list[str] = []
    for name, text in files.items():
        target = output_dir / name
        if not target.exists():
            problems.append(f"{target}: missing")
            continue
        current = target.read_text(encoding="utf-8")
        if current != text:
            diff = difflib.unified_diff(
                current.splitlines(keepends=True),
                text.splitlines(keepends=True),
                fromfile=f"{target} (committed)",
                tofile=f"{target} (generated)",
                n=1,
            )
            problems.append("".join(list(diff)[:60]))
    if output_dir.is_dir():
        for stale in sorted(output_dir.glob("*.yaml")):
            if stale.name not in files and _is_our_crd(stale):
                problems.append(f"{stale}: no registered model generates it any more")
    return problems


def _is_our_crd(path: Path) -> bool:
    return path.read_text(encoding="utf-8").startswith("# Generated by `mlkube crds`")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlkube crds",
        description="Generate the CustomResourceDefinitions from the pydantic models.",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        help="write one <plural>.<group>.yaml per CRD here (default: all to stdout)",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the files in --output-dir differ from the models",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    try:
        files = generate()
    except SchemaError as exc:
        print(f"mlkube crds: {exc}", file=sys.stderr)
        return 2
    if args.check:
        if args.output_dir is None:
            parser.error("--check needs --output-dir")
        problems = check(args.output_dir, files)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print(
                f"mlkube crds: {len(problems)} file(s) out of date; run "
                f"`mlkube crds --output-dir {args.output_dir}`",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.output_dir is None:
        sys.stdout.write("".join(files.values()))
        return 0
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        target = args.output_dir / name
        if not target.exists() or target.read_text(encoding="utf-8") != text:
            target.write_text(text, encoding="utf-8")
            print(f"wrote {target}", file=sys.stderr)
    for stale in sorted(args.output_dir.glob("*.yaml")):
        if stale.name not in files and _is_our_crd(stale):
            stale.unlink()
            print(f"removed {stale}", file=sys.stderr)
    return 0
