"""``mlkube migrate``: Kubeflow ``kubeflow.org/v1`` PyTorchJobs in, mlkube ones out.

Reads manifests (``-f FILE``, several allowed, ``-`` for stdin; multi-document YAML and
``kind: List`` both work) or the PyTorchJobs of a cluster (``--from-cluster`` with ``-n`` or
``-A``, through the operator's own Kubernetes client and the kubeconfig), and writes
``mlkube.dev/v1alpha1`` PyTorchJobs to stdout, ready for ``kubectl apply --server-side -f -``.
Every change is reported on stderr, one line per field, as ``<namespace>/<name>: <field>:
<what>``; so is everything that could not be carried.

What changes: ``apiVersion``; the fields the API server owns (uid, resourceVersion,
creationTimestamp, managedFields, status...) and kubectl's last-applied annotation are
dropped; replica types spelt in another case (``master``) get Kubeflow's canonical spelling;
a Master without ``replicas`` gets Kubeflow's default 1, which mlkube wants stated.

What cannot be carried (exit status 1, and nothing on stdout, unless ``--force``): a field
mlkube's schema does not have (it would be pruned: listed and left out), a value mlkube
refuses (the job is then left out even with ``--force``), and a job that already finished
on Kubeflow (applied again it would train again). Other documents in the input pass through
unchanged.

The conversion (:func:`migrate_object`) is pure; :func:`main` only reads and writes.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml
from pydantic import ValidationError

from mlkube.api.crdgen import build_crd
from mlkube.api.pytorchjob import (
    GROUP,
    KIND,
    MANAGED_BY_OPERATOR,
    MASTER,
    PYTORCHJOB,
    REPLICA_TYPES,
    VERSION,
    PyTorchJob,
    name_problem,
)

JsonDict = dict[str, Any]

KUBEFLOW_API_VERSION = "kubeflow.org/v1"
KUBEFLOW_PLURAL = "pytorchjobs"
API_VERSION = f"{GROUP}/{VERSION}"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
#: metadata the API server writes; it never travels to another object
SERVER_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
)


@dataclass
class Migrated:
    """One input document after migration."""

    obj: JsonDict | None
    """What to write (None: left out, see ``problems``)."""
    changes: list[str] = field(default_factory=list)
    """Fields changed or dropped on purpose: reported, not an error."""
    problems: list[str] = field(default_factory=list)
    """What could not be carried: an error unless ``--force``."""
    where: str = ""


def _spec_schema() -> JsonDict:
    crd = build_crd(PYTORCHJOB)
    schema: JsonDict = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def undeclared(value: Any, schema: JsonDict, path: str) -> list[str]:
    """The paths in ``value`` that ``schema`` does not declare (the API server would prune
    them, or refuse them under strict field validation)."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(value, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, child in value.items():
            if properties is not None:
                if key not in properties:
                    found.append(f"{path}.{key}")
                else:
                    found += undeclared(child, properties[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += undeclared(child, extra, f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            found += undeclared(item, schema["items"], f"{path}[{i}]")
    return found


def _remove(obj: JsonDict, path: str) -> None:
    """Delete the field at ``spec.a.b[2].c`` (a path :func:`undeclared` made)."""
    node: Any = obj
    parts: list[str | int] = []
    for segment in path.split("."):
        name, _, rest = segment.partition("[")
        parts.append(name)
        for index in rest.split("[") if rest else []:
            parts.append(int(index.rstrip("]")))
    for part in parts[:-1]:
        node = node[part]
    del node[parts[-1]]


def _finished(status: Any) -> str | None:
    for condition in (status or {}).get("conditions") or []:
        if condition.get("type") in ("Succeeded", "Failed") and condition.get("status") == "True":
            return str(condition["type"])
    return None


def migrate_object(doc: Any, spec_schema: JsonDict | None = None) -> Migrated:
    """One document: a Kubeflow PyTorchJob becomes an mlkube one; anything else passes."""
    if not isinstance(doc, dict) or doc.get("kind") != KIND:
        return Migrated(obj=doc)
    meta_in = doc.get("metadata") or {}
    where = f"{meta_in.get('namespace') or '-'}/{meta_in.get('name') or '?'}"
    if doc.get("apiVersion") != KUBEFLOW_API_VERSION:
        return Migrated(obj=doc, where=where)
    out = Migrated(obj=None, where=where)
    obj = copy.deepcopy(doc)
    obj["apiVersion"] = API_VERSION
    out.changes.append(f"apiVersion: {KUBEFLOW_API_VERSION} -> {API_VERSION}")

    meta = obj.setdefault("metadata", {})
    for key in SERVER_METADATA:
        if key in meta:
            del meta[key]
            out.changes.append(f"metadata.{key}: dropped (the API server sets it)")
    annotations = meta.get("annotations") or {}
    if LAST_APPLIED in annotations:
        del annotations[LAST_APPLIED]
        out.changes.append(f"metadata.annotations.{LAST_APPLIED}: dropped (kubectl's record)")
        if not annotations:
            del meta["annotations"]
    if "status" in obj:
        finished = _finished(obj["status"])
        if finished:
            out.problems.append(
                f"status: the job already finished on Kubeflow ({finished}): "
                "applied again it would train again"
            )
        del obj["status"]
        out.changes.append("status: dropped (mlkube starts the job from its first pod)")

    spec = obj.get("spec")
    specs = spec.get("pytorchReplicaSpecs") if isinstance(spec, dict) else None
    if isinstance(specs, dict):
        for key in list(specs):
            canonical = next((t for t in REPLICA_TYPES if t.lower() == str(key).lower()), key)
            if canonical != key:
                specs[canonical] = specs.pop(key)
                out.changes.append(f"spec.pytorchReplicaSpecs.{key}: renamed {canonical}")
        master = specs.get(MASTER)
        if isinstance(master, dict) and "replicas" not in master:
            master["replicas"] = 1
            out.changes.append(
                "spec.pytorchReplicaSpecs.Master.replicas: set to 1 (Kubeflow's default; "
                "mlkube wants it stated)"
            )
    if isinstance(spec, dict):
        for path in undeclared(spec, spec_schema or _spec_schema(), "spec"):
            _remove(obj, path)
            out.problems.append(f"{path}: mlkube has no such field; left out")
    refused = name_problem(str(meta.get("name", "")))
    if refused is not None:
        out.problems.append(f"metadata.name: {refused}; job left out")
        return out
    try:
        PyTorchJob.model_validate(obj)
    except ValidationError as exc:
        for error in exc.errors():
            at = ".".join(str(p) for p in error["loc"])
            message = str(error["msg"]).removeprefix("Value error, ")
            out.problems.append(f"{at or 'spec'}: {message}; job left out")
        return out
    run_policy = (spec or {}).get("runPolicy") or {}
    if run_policy.get("managedBy") not in (None, MANAGED_BY_OPERATOR):
        out.changes.append(
            f"spec.runPolicy.managedBy: kept {run_policy['managedBy']!r}: mlkube leaves the "
            "job to that controller"
        )
    out.obj = obj
    return out


def documents(text: str) -> list[Any]:
    """The objects of a YAML stream, with ``kind: List`` (``kubectl get -o yaml``) opened."""
    out: list[Any] = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if isinstance(doc, dict) and str(doc.get("kind", "")).endswith("List") and "items" in doc:
            for item in doc["items"] or []:
                if isinstance(item, dict) and "kind" not in item and doc["kind"] != "List":
                    item = {"kind": doc["kind"].removesuffix("List"), **item}
                    item.setdefault("apiVersion", doc.get("apiVersion"))
                out.append(item)
        else:
            out.append(doc)
    return out


async def cluster_jobs(namespace: str | None, all_namespaces: bool) -> list[JsonDict]:
    """Every ``kubeflow.org/v1`` PyTorchJob in one namespace (default: the kubeconfig's) or
    in all, read with the operator's client and credentials, page by page."""
    import kopf

    from mlkube.operator.kube import ApiError, KubeAPI, collection_path, login

    info = login(settings=kopf.OperatorSettings())
    if info is None:
        raise SystemExit("mlkube migrate: no kubeconfig or in-cluster credentials found")
    if not all_namespaces and namespace is None:
        namespace = info.default_namespace or "default"
    api = KubeAPI(info)
    path = collection_path(
        KUBEFLOW_API_VERSION, KUBEFLOW_PLURAL, None if all_namespaces else namespace
    )
    items: list[JsonDict] = []
    params = {"limit": "250"}
    try:
        while True:
            page = await api.request("GET", path, params=params)
            for item in page.get("items") or []:
                items.append({"apiVersion": KUBEFLOW_API_VERSION, "kind": KIND, **item})
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return items
            params = {"limit": "250", "continue": token}
    except ApiError as exc:
        if exc.status == 404:
            raise SystemExit(
                "mlkube migrate: the cluster has no kubeflow.org/v1 PyTorchJob resource"
            ) from exc
        raise SystemExit(f"mlkube migrate: {exc}") from exc
    finally:
        await api.close()


def _read(paths: Iterable[str], stdin: IO[str]) -> list[Any]:
    docs: list[Any] = []
    for path in paths:
        text = stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        docs += documents(text)
    return docs


def run(docs: Sequence[Any], force: bool, out: IO[str], err: IO[str]) -> int:
    """Migrate ``docs``, write the result and the report; the exit status."""
    schema = _spec_schema()
    results = [migrate_object(doc, schema) for doc in docs]
    problems = 0
    for result in results:
        for change in result.changes:
            print(f"{result.where}: {change}", file=err)
        for problem in result.problems:
            print(f"{result.where}: could not carry: {problem}", file=err)
            problems += 1
    if problems and not force:
        print(
            f"mlkube migrate: {problems} thing(s) could not be carried; nothing written "
            "(--force writes what could be)",
            file=err,
        )
        return 1
    written = [r.obj for r in results if r.obj is not None]
    out.write(yaml.safe_dump_all(written, sort_keys=False, explicit_start=True) if written else "")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mlkube migrate",
        description="Convert Kubeflow kubeflow.org/v1 PyTorchJobs into mlkube ones (stdout); "
        "every change and everything that could not be carried is reported on stderr.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-f", "--filename", action="append", metavar="FILE", help="a manifest file, - for stdin"
    )
    source.add_argument(
        "--from-cluster", action="store_true", help="read the PyTorchJobs of the cluster"
    )
    parser.add_argument("-n", "--namespace", help="with --from-cluster: this namespace")
    parser.add_argument(
        "-A", "--all-namespaces", action="store_true", help="with --from-cluster: every namespace"
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="write what could be carried even when something could not (exit 0)",
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if (args.namespace or args.all_namespaces) and not args.from_cluster:
        parser.error("-n and -A go with --from-cluster")
    if args.namespace and args.all_namespaces:
        parser.error("-n and -A exclude each other")
    try:
        if args.from_cluster:
            docs: list[Any] = list(asyncio.run(cluster_jobs(args.namespace, args.all_namespaces)))
        else:
            docs = _read(args.filename, sys.stdin)
    except (OSError, yaml.YAMLError) as exc:
        print(f"mlkube migrate: {exc}", file=sys.stderr)
        return 2
    return run(docs, args.force, sys.stdout, sys.stderr)
