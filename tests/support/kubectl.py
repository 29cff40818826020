"""What the end-to-end tests hand to and read back from ``kubectl``."""

from __future__ import annotations

import json
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
