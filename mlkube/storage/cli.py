"""`mlkube fetch`: the init container that puts a ModelService's model where the runtime
loads it from.

Exit status 0 and the model's local path on stdout when the model is there and verified;
otherwise exit status 1, and ``Reason: message`` (one line) on stderr and in the
termination log, where Kubernetes shows it in the pod's status and the operator copies
it into the ModelService's conditions. No traceback for an expected failure: the reason is
the whole story.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mlkube.storage.fetch import FetchError, fetch
from mlkube.storage.uri import MODEL_MOUNT, StorageURIError, check_sha256

TERMINATION_LOG = "/dev/termination-log"
"""The container's ``terminationMessagePath`` (Kubernetes' default)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mlkube fetch",
        description="Download (or find) the model named by a storage URI into a directory "
        "and verify it. S3 settings come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, "
        "AWS_SESSION_TOKEN, AWS_ENDPOINT_URL and AWS_REGION.",
        epilog="See docs/storage.md.",
    )
    p.add_argument(
        "--storage-uri",
        default=os.environ.get("MLKUBE_STORAGE_URI"),
        help="pvc://CLAIM/path, http(s)://..., s3://bucket/key or a local path "
        "(default: $MLKUBE_STORAGE_URI)",
    )
    p.add_argument(
        "--dest", default=MODEL_MOUNT, type=Path, help=f"download directory (default {MODEL_MOUNT})"
    )
    p.add_argument("--sha256", help="expected sha256 of the file (64 hex digits)")
    p.add_argument(
        "--format", dest="fmt", help="model format to check the file against (e.g. onnx)"
    )
    p.add_argument(
        "--pvc-root",
        default=MODEL_MOUNT,
        type=Path,
        help=f"where the claim of a pvc:// URI is mounted (default {MODEL_MOUNT})",
    )
    p.add_argument(
        "--termination-log",
        type=Path,
        help=f"file that gets the one-line failure reason (default: {TERMINATION_LOG} when "
        "it exists, as in a container)",
    )
    return p


def write_termination_log(path: Path | None, line: str) -> None:
    """Best effort. By default only into a termination log that is already there (the
    kubelet mounts one into every container), so that a run by hand never creates
    ``/dev/termination-log`` on a machine; the reason is on stderr anyway."""
    if path is None:
        path = Path(TERMINATION_LOG)
        if not path.exists():
            return
    try:
        with path.open("w", encoding="utf-8") as out:
            out.write(line[:4000] + "\n")  # the kubelet keeps at most 4096 bytes
    except OSError:
        pass


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    try:
        if not args.storage_uri:
            raise FetchError(
                "InvalidStorageURI", "no storage URI: pass --storage-uri or set MLKUBE_STORAGE_URI"
            )
        sha256 = None
        if args.sha256:
            try:
                sha256 = check_sha256(args.sha256)
            except StorageURIError as exc:
                raise FetchError("InvalidStorageURI", str(exc)) from exc
        path = fetch(
            args.storage_uri,
            args.dest,
            sha256=sha256,
            fmt=args.fmt,
            env=os.environ,
            pvc_root=args.pvc_root,
        )
    except FetchError as exc:
        line = exc.line()
        print(f"mlkube fetch: {line}", file=sys.stderr)
        write_termination_log(args.termination_log, line)
        return 1
    print(path)
    return 0
