"""Nothing temporary outlives the command that made it: searches, their report's artifacts, compile, and the
predictor's samples leave the temporary folder as they found it."""

import json
import os
import subprocess
import sys
import tempfile

import pytest

from hwnas.arch import get_space
from hwnas.data import data_dir

NB201_SMALL = ("--space", "nb201", "--space-option", "cells_per_stage=1")


def _hwnas(tmp, *args):
    """``python -m hwnas ARGS`` with ``TMPDIR`` pointed at ``tmp``."""
    env = dict(os.environ, TMPDIR=str(tmp))
    res = subprocess.run([sys.executable, "-m", "hwnas", *map(str, args)], capture_output=True, text=True,
                         timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    return res


@pytest.fixture
def fresh_tmp(tmp_path, monkeypatch):
    """A new, empty temporary folder, used by this process (``tempfile``) and its subprocesses (``TMPDIR``)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


@pytest.mark.slow  # ~11 s; by default test_a_compiling_search_and_its_artifacts_leave_no_temporary_folder covers it
def test_a_30_point_search_leaves_no_temporary_folder(tmp_path, fresh_tmp):
    if not (data_dir() / "nb201" / "latency.csv").is_file():
        pytest.skip(f"published data not found in {data_dir()} (set HWNAS_DATA)")
    res = _hwnas(fresh_tmp, "search", "--space", "nb201", "--target", "published:raspi4", "--accuracy", "table",
                 "--budget", 30, "--pop-size", 10, "--workers", 1, "--out", tmp_path / "run")
    assert "30 points evaluated" in res.stdout
    assert sorted(os.listdir(fresh_tmp)) == []


def test_a_compiling_search_and_its_artifacts_leave_no_temporary_folder(tmp_path, fresh_tmp):
    res = _hwnas(fresh_tmp, "search", *NB201_SMALL, "--target", "asic:eyeriss", "--accuracy", "proxy:synflow",
                 "--formulation", "random", "--budget", 2, "--pop-size", 2, "--workers", 1, "--artifacts", 1,
                 "--out", tmp_path / "run")
    assert "2 points evaluated" in res.stdout
    assert len(list((tmp_path / "run" / "artifacts").glob("*/manifest.json"))) == 1
    assert sorted(os.listdir(fresh_tmp)) == []


def test_compile_leaves_no_temporary_folder_and_keeps_the_onnx(tmp_path, fresh_tmp, cli):
    code, _, err = cli("compile", "--space", "nb201", "--genome", "[1, 2, 3, 1, 2, 3]", "--target", "asic:eyeriss",
                       "--out", tmp_path / "b")
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert (tmp_path / "b" / manifest["files"]["onnx"]["path"]).is_file()
    assert sorted(os.listdir(fresh_tmp)) == []


def test_a_predictor_sample_leaves_no_temporary_folder(fresh_tmp):
    from hwnas.pipeline import predictor
    from hwnas.targets import get_target

    space, target = get_space("nb201", cells_per_stage=1), get_target("cpu")
    target.set_measure_options(repeats=2)
    samples = predictor.collect(space, target, predictor.sample_candidates(space, target, 1, seed=0))
    assert len(samples) == 1 and samples[0].latency_ms > 0
    assert sorted(os.listdir(fresh_tmp)) == []
