"""Building blocks that the custom-resource models declare themselves with.

The pydantic models in ``mlkube.api`` are the single source of truth for each custom
resource; ``mlkube.api.crdgen`` turns them into CRD YAML. Everything the generator needs
beyond plain pydantic is declared with the helpers in this module (see the module
docstring of ``mlkube.api.crdgen`` for a worked example):

* ``KubeModel`` — base class: camelCase aliases, attribute docstrings as descriptions.
* ``kube(...)`` / ``Kube(...)`` — ``x-kubernetes-*`` extensions for one field, one model
  or one reusable ``Annotated`` type; ``rule(...)`` builds one CEL validation rule.
* ``IntOrString`` / ``Quantity`` — Kubernetes' int-or-string types.
* ``CustomResource`` + ``register`` — the CRD-level metadata of a root kind (names,
  printer columns, subresources, root-level rules) and the registry the generator reads.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, GetJsonSchemaHandler
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

JsonDict = dict[str, Any]

GROUP = "mlkube.dev"
"""The API group of every mlkube kind."""
VERSION = "v1alpha1"
"""The served (and stored) version of every mlkube kind."""
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
"""What Kubernetes accepts as a Service name, and so as the name of a kind whose children
are named after it."""


class KubeModel(BaseModel):
    """Base of every API model.

    Field names are snake_case in Python and camelCase on the wire (Kubernetes style);
    attribute docstrings become the schema's ``description`` (so ``kubectl explain`` shows
    them). Unknown fields are ignored rather than rejected: the API server prunes them
    anyway, and an operator that refuses objects written by a newer CRD version would turn a
    harmless upgrade into a crash loop.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
        extra="ignore",
    )

    def to_kube(self) -> JsonDict:
        """The object as the API server stores it: camelCase keys, no nulls."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


# --------------------------------------------------------------------------- extensions


def rule(
    expression: str,
    message: str,
    *,
    reason: Literal["FieldValueInvalid", "FieldValueForbidden", "FieldValueRequired"] | None = None,
    field_path: str | None = None,
    message_expression: str | None = None,
    optional_old_self: bool | None = None,
) -> JsonDict:
    """One ``x-kubernetes-validations`` entry: a CEL rule and the message a person reads."""
    out: JsonDict = {"rule": expression, "message": message}
    if message_expression is not None:
        out["messageExpression"] = message_expression
    if reason is not None:
        out["reason"] = reason
    if field_path is not None:
        out["fieldPath"] = field_path
    if optional_old_self is not None:
        out["optionalOldSelf"] = optional_old_self
    return out


def kube(
    *,
    validations: list[JsonDict] | None = None,
    preserve_unknown_fields: bool = False,
    int_or_string: bool = False,
    embedded_resource: bool = False,
    list_type: Literal["atomic", "set", "map"] | None = None,
    list_map_keys: list[str] | None = None,
    map_type: Literal["atomic", "granular"] | None = None,
    nullable: bool = False,
    **openapi: Any,
) -> JsonDict:
    """The ``x-kubernetes-*`` keywords for one schema node, as a dict.

    Use it as ``Field(json_schema_extra=kube(...))`` on a field, or as
    ``model_config = ConfigDict(json_schema_extra=kube(...))`` on a model (rules on a
    model see the whole object as ``self``). Extra keyword arguments are copied verbatim
    (e.g. ``pattern=...``, ``maxLength=...``) for constraints pydantic cannot express.
    """
    out: JsonDict = dict(openapi)
    if validations:
        out["x-kubernetes-validations"] = list(validations)
    if preserve_unknown_fields:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if int_or_string:
        out["x-kubernetes-int-or-string"] = True
    if embedded_resource:
        out["x-kubernetes-embedded-resource"] = True
    if list_type is not None:
        out["x-kubernetes-list-type"] = list_type
    if list_map_keys is not None:
        out["x-kubernetes-list-map-keys"] = list(list_map_keys)
    if map_type is not None:
        out["x-kubernetes-map-type"] = map_type
    if nullable:
        out["nullable"] = True
    return out


@dataclass(frozen=True)
class Kube:
    """``Annotated`` marker carrying the same keywords as :func:`kube`.

    Unlike ``Field(json_schema_extra=...)`` it attaches to the *type*, so a reusable alias
    (``Port = Annotated[int, Field(ge=1, le=65535), Kube(...)]``) keeps its extensions
    wherever it is used, including inside ``list[...]`` and ``dict[...]``.
    """

    extensions: JsonDict

    @classmethod
    def of(cls, **kwargs: Any) -> Kube:
        return cls(kube(**kwargs))

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = dict(handler(core_schema))
        for key, value in self.extensions.items():
            if key == "x-kubernetes-validations":
                schema[key] = [*schema.get(key, []), *value]
            else:
                schema[key] = value
        return schema

    def __hash__(self) -> int:
        return hash(repr(sorted(self.extensions.items(), key=lambda kv: kv[0])))


# ------------------------------------------------------------------ int-or-string types

# Kubernetes' resource.Quantity grammar (the same regular expression controller-gen emits).
QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY_RE = re.compile(QUANTITY_PATTERN)
_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(value: int | str) -> Decimal:
    """Exact numeric value of a Kubernetes quantity (``"500m"`` -> 0.5, ``"1Gi"`` -> 2**30).

    Used to compare requests with limits in pure code (the CRD does the same with CEL's
    ``quantity()`` where the API server supports it).
    """
    text = str(value).strip()
    if not _QUANTITY_RE.match(text):
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, 1.5Gi)")
    number = text
    suffix = ""
    for candidate in ("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"):
        if text.endswith(candidate):
            number, suffix = text[: -len(candidate)], candidate
            break
    else:
        if text[-1] in "numkMGTPE" and not re.search(r"[eE][+-]?[0-9.]+$", text):
            number, suffix = text[:-1], text[-1]
    try:
        return Decimal(number) * _SUFFIX[suffix]
    except InvalidOperation as exc:  # pragma: no cover - the regex rules this out
        raise ValueError(f"{value!r} is not a Kubernetes quantity") from exc


def _normalise_quantity(value: int | str) -> str:
    parse_quantity(value)
    return str(value)


IntOrString = Annotated[int | str, Kube.of(int_or_string=True)]
"""A value that may be written as a number or a string (ports, percentages)."""

Quantity = Annotated[
    int | str,
    AfterValidator(_normalise_quantity),
    Kube.of(int_or_string=True, pattern=QUANTITY_PATTERN, maxLength=64),
]
"""A Kubernetes resource quantity (``2``, ``500m``, ``1.5Gi``); always a string in Python."""


# ------------------------------------------------------------------ CRD-level metadata


@dataclass(frozen=True)
class PrinterColumn:
    """One ``additionalPrinterColumns`` entry (what ``kubectl get`` shows)."""

    name: str
    json_path: str
    type: Literal["string", "integer", "number", "boolean", "date"] = "string"
    description: str | None = None
    priority: int = 0
    format: str | None = None


@dataclass(frozen=True)
class Scale:
    """The ``scale`` subresource: what ``kubectl scale`` and HorizontalPodAutoscalers use."""

    spec_replicas_path: str = ".spec.replicas"
    status_replicas_path: str = ".status.replicas"
    label_selector_path: str | None = ".status.selector"


@dataclass(frozen=True)
class CustomResource:
    """Everything about a kind that is not the shape of its spec and status."""

    kind: str
    plural: str
    spec: type[BaseModel]
    status: type[BaseModel] | None = None
    group: str = GROUP
    version: str = VERSION
    scope: Literal["Namespaced", "Cluster"] = "Namespaced"
    singular: str | None = None
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ("mlkube",)
    printer_columns: tuple[PrinterColumn, ...] = ()
    scale: Scale | None = None
    validations: tuple[JsonDict, ...] = ()
    """Rules on the whole object (``self.spec``, ``self.status``...)."""
    name_validations: tuple[JsonDict, ...] = ()
    """Rules on ``metadata.name`` (``self`` is the name). Placed on that node, so the API
    server reports ``metadata.name: Invalid value: "<name>": <message>``; a rule on the
    whole object would be reported at ``<nil>``, and a root ``fieldPath`` cannot point
    into metadata unless ``name`` is declared there, which this does."""
    description: str | None = None
    spec_required: bool = True
    spec_defaults: bool = True
    """False: the spec schema carries no ``default``s, so the stored object (``kubectl get
    -o yaml``, a GitOps diff) holds only what its author wrote; the controller applies the
    model's defaults in memory."""
    extra: JsonDict = field(default_factory=dict)
    """Verbatim additions to the root schema node (rarely needed)."""

    @property
    def name(self) -> str:
        """The CRD's own name: ``<plural>.<group>``."""
        return f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


_REGISTRY: dict[str, CustomResource] = {}


def register(resource: CustomResource) -> CustomResource:
    """Add a kind to the set that ``mlkube crds`` generates; returns it unchanged.

    Registering the same name twice with a different definition is an error (two modules
    claiming one CRD); registering an identical definition again (a module re-import) is
    harmless.
    """
    known = _REGISTRY.get(resource.name)
    if known is not None and known != resource:
        raise ValueError(f"custom resource {resource.name} is registered twice")
    _REGISTRY[resource.name] = resource
    return resource


def registered() -> list[CustomResource]:
    """Every registered kind, in a stable order (group, then kind)."""
    return sorted(_REGISTRY.values(), key=lambda r: (r.group, r.kind))
