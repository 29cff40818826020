"""What the end-to-end tests hand to and read back from ``kubectl``."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def modelservice(name: str, spec: dict[str, Any]) -> str:
    """A ModelService manifest as JSON, for ``kubectl apply -f -``."""
    return json.dumps(
        {
            "apiVersion": "mlkube.dev/v1alpha1",
            "kind": "ModelService",
            "metadata": {"name": name},
            "spec": spec,
        }
    )


def watched_objects(path: Path) -> list[dict[str, Any]]:
    """The objects of a ``kubectl get -w -o json --output-watch-events`` log so far."""
    text, decoder, at = path.read_text(), json.JSONDecoder(), 0
    out: list[dict[str, Any]] = []
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        try:
            event, at = decoder.raw_decode(text, at)
        except ValueError:
            return out  # the end, or an event still being written
        out.append(event["object"])


@contextlib.contextmanager
def watching(cluster: Any, namespace: str, kind: str, name: str, log: Path) -> Iterator[None]:
    """``kubectl get -w`` of one object written to ``log`` while the block runs: every
    version the API server stores is recorded, not sampled by polling (read it with
    ``watched_objects``)."""
    with log.open("wb") as fh:
        watch = subprocess.Popen(
            [
                str(cluster.kubectl_path), "-n", namespace, "get", kind, name,
                "--watch", "--output-watch-events", "-o", "json",
            ],
            stdout=fh, stderr=subprocess.DEVNULL, env=cluster.env(), start_new_session=True,
        )  # fmt: skip
    try:
        yield
    finally:
        watch.terminate()
        watch.wait(timeout=10)
