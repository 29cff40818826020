"""The typed core/v1 PodTemplateSpec schema that replica templates are checked against.

``podtemplatespec.json`` beside this module is generated data, never edited by hand:
``scripts/gen-podtemplate-schema`` extracts it from the OpenAPI document of the Kubernetes
release the project pins (e2e/kube/go.mod), without descriptions or defaults. With it the
API server refuses at ``kubectl apply`` what it would otherwise prune or pass on to a pod
that can never be created: a misspelt field (``imagePulPolicy``, refused under kubectl's
default strict field validation), a wrongly typed one (``containerPort: "abc"``), a bad
quantity. :func:`pod_template_schema` lays a kind's own checks over it.

In Python the template stays a plain mapping: the operator copies it into the pods it
creates and never interprets more of it than the container it adds environment to.
"""

from __future__ import annotations

import copy
import json
from importlib import resources
from typing import Any

from pydantic import WithJsonSchema

JsonDict = dict[str, Any]

POD_TEMPLATE_SPEC: JsonDict = json.loads(
    resources.files(__package__).joinpath("podtemplatespec.json").read_text(encoding="utf-8")
)
"""The generated schema (structural; no descriptions)."""


def overlay(base: JsonDict, over: JsonDict) -> JsonDict:
    """``base`` with ``over`` laid on it: nested objects merged key by key, ``required`` and
    ``x-kubernetes-validations`` lists joined, anything else replaced."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = overlay(out[key], value)
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = [*out[key], *(v for v in value if v not in out[key])]
        elif key == "x-kubernetes-validations" and isinstance(out.get(key), list):
            out[key] = [*out[key], *value]
        else:
            out[key] = copy.deepcopy(value)
    return out


def pod_template_schema(checks: JsonDict) -> WithJsonSchema:
    """The CRD schema of a pod-template field, for ``Annotated[dict[str, Any], ...]``: the
    generated PodTemplateSpec with ``checks`` laid over it (see :func:`overlay`)."""
    return WithJsonSchema(overlay(POD_TEMPLATE_SPEC, checks))
