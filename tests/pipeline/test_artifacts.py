"""Bundles: written whole, verified by sha256, run in a fresh process with the stock TVM runtime."""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from hwnas.arch import get_space
from hwnas.errors import ArtifactError
from hwnas.pipeline.artifacts import verify_bundle, write_bundle
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.targets import get_target


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    target = get_target("cpu")
    target.set_measure_options(repeats=2, min_repeat_ms=5)
    space = get_space("nb201")
    return evaluate(Candidate.from_space(space, [3, 1, 2, 0, 4, 3], {"tile_oc": 16}), target,
                    workdir=tmp_path_factory.mktemp("work"))


def test_bundle_runs_in_a_fresh_process_and_matches_onnx_runtime(tmp_path, evaluation):
    out = tmp_path / "bundle"
    manifest_path = write_bundle(evaluation, out)
    manifest = verify_bundle(out)
    assert manifest_path == out / "manifest.json"
    assert {"onnx", "library", "runner"} <= set(manifest["files"])
    assert manifest["architecture"]["space"] == "nb201"
    assert manifest["architecture"]["genome"] == [3, 1, 2, 0, 4, 3]
    assert manifest["hw"]["tile_oc"] == 16
    assert manifest["inputs"] == [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert manifest["outputs"][0]["shape"] == [1, 10]
    assert set(manifest["versions"]) >= {"hwnas", "tvm", "torch"}
    assert manifest["metrics"]["latency_ms"] > 0

    x = np.random.default_rng(4).standard_normal((1, 3, 32, 32)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    # a fresh interpreter that cannot import hwnas: only numpy and the TVM runtime
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "-I", str(out / "run.py"), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "shape [1, 10]" in proc.stdout
    y = np.load(tmp_path / "y.npy")
    ref = ort.InferenceSession(str(out / "model.onnx")).run(None, {"input": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)


def test_runner_does_not_need_hwnas(tmp_path, evaluation):
    out = tmp_path / "b"
    write_bundle(evaluation, out)
    assert "hwnas" not in (out / "run.py").read_text().replace("hwnas bundle", "")


def test_non_empty_folder_is_refused_and_left_alone(tmp_path, evaluation):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="is not empty; choose another or pass --overwrite"):
        write_bundle(evaluation, out)
    assert (out / "keep.txt").read_text() == "mine"
    write_bundle(evaluation, out, overwrite=True)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").is_file()


def test_failed_write_leaves_nothing_behind(tmp_path, evaluation, monkeypatch):
    def broken_emit(built, folder):
        (folder / "model.so").write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(evaluation.target, "emit", broken_emit)
    with pytest.raises(ArtifactError, match="disk full"):
        write_bundle(evaluation, tmp_path / "half")
    assert not (tmp_path / "half").exists()
    assert [p.name for p in tmp_path.iterdir()] == []


def test_tampered_bundle_is_detected(tmp_path, evaluation):
    out = tmp_path / "b"
    write_bundle(evaluation, out)
    data = json.loads((out / "manifest.json").read_text())
    (out / data["files"]["onnx"]["path"]).write_bytes(b"changed")
    with pytest.raises(ArtifactError, match="does not match its sha256"):
        verify_bundle(out)
