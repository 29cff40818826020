"""`mlkube serve --storage-uri` / MLKUBE_STORAGE_URI: validated with the rest of the
configuration, and resolved to a verified local path before any worker starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlkube.serving import cli
from mlkube.serving.config import ConfigError, load_config
from mlkube.serving.model import settings_from
from mlkube.storage.fetch import FetchError


def test_the_variable_and_the_flag_set_it() -> None:
    assert load_config(env={"MLKUBE_STORAGE_URI": "/mnt/models/m.onnx"}).model.storage_uri == (
        "/mnt/models/m.onnx"
    )
    args = cli._parser().parse_args(["--storage-uri", "s3://bkt/m.onnx"])
    assert cli.resolve_config(args, {}).model.storage_uri == "s3://bkt/m.onnx"


def test_an_unknown_scheme_names_the_variable() -> None:
    with pytest.raises(ConfigError) as exc:
        load_config(env={"MLKUBE_STORAGE_URI": "gs://b/m"})
    assert "model.storage_uri (from MLKUBE_STORAGE_URI)" in str(exc.value)
    assert "unsupported storage URI scheme 'gs'" in str(exc.value)


def test_a_local_path_is_checked_and_handed_to_the_model(tmp_path: Path) -> None:
    model = tmp_path / "weights.bin"
    model.write_bytes(b"\x01")
    config = load_config(
        env={"MLKUBE_STORAGE_URI": f"file://{model}", "MLKUBE_MODEL_FORMAT": "custom"},
        overrides={("model", "class"): "pkg.m:Model"},
    )
    resolved, created = cli.prepare_model(config)
    assert created is None  # nothing downloaded, nothing to remove
    assert settings_from(resolved).path == str(model)
    with pytest.raises(FetchError, match="does not exist"):
        cli.prepare_model(load_config(env={"MLKUBE_STORAGE_URI": str(tmp_path / "gone")}))


def test_serve_stops_with_one_line_when_the_model_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = cli.main(["--storage-uri", str(tmp_path / "gone.onnx")])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        f"mlkube serve: model.storage_uri: ModelNotFound: {tmp_path / 'gone.onnx'} "
        "does not exist on this machine"
    )


def test_fetch_writes_the_termination_log_a_container_has_and_never_creates_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlkube.storage import cli as fetch_cli

    log = tmp_path / "termination-log"
    monkeypatch.setattr(fetch_cli, "TERMINATION_LOG", str(log))
    args = ["--storage-uri", "gs://bucket/m", "--dest", str(tmp_path)]
    assert fetch_cli.main(args) == 1
    assert not log.exists()  # a run by hand: stderr only
    log.write_text("")  # what the kubelet mounts into every container
    assert fetch_cli.main(args) == 1
    assert log.read_text().startswith("InvalidStorageURI: unsupported storage URI scheme 'gs'")
    assert capsys.readouterr().err.count("mlkube fetch: InvalidStorageURI: ") == 2
