"""``hwnas tune``: a tiny model tuned within a one-minute budget, resumed from its database; bad input in one line."""

import json
import re

import numpy as np
import onnx
import pytest
import torch

from hwnas.ir.lower import export_onnx


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10)).eval()
    return export_onnx(net, (1, 3, 8, 8), tmp_path_factory.mktemp("m") / "tiny.onnx")


def _tune(cli, tiny_onnx, db, out):
    return cli("tune", "--onnx", tiny_onnx, "--minutes", "1", "--threads", "1", "--trials", "2", "--db", db,
               "--out", out)


def test_tune_writes_a_bundle_that_runs_within_its_budget(cli, tmp_path, tiny_onnx):
    import onnxruntime as ort
    import tvm
    from tvm import relax

    code, out, err = _tune(cli, tiny_onnx, tmp_path / "db", tmp_path / "b")
    assert code == 0, err
    record = json.loads((tmp_path / "b" / "tuning.json").read_text())
    assert record["seconds"] <= 60
    # the progress line shows the best time so far beside ONNX Runtime's
    assert re.search(r"best [0-9.]+ ms \(.*\)  ONNX Runtime [0-9.]+ ms", err), err
    closing = out.strip().splitlines()[-1]
    ratio = float(re.search(r": ([0-9.]+)x ONNX Runtime", closing).group(1))
    assert ratio == pytest.approx(record["ratio_to_onnxruntime"], abs=0.01)
    tried = [c for c in record["configs"] if c["latency_ms"] is not None]
    assert len(tried) >= 2 and sum(c["counters"]["tuning_tuned"] for c in tried) >= 2
    assert record["best_hw"]["num_threads"] == 1 and record["best_ms"] > 0

    # the bundle runs in the stock TVM runtime and computes what ONNX Runtime does
    x = np.random.default_rng(1).standard_normal((1, 3, 8, 8)).astype("float32")
    vm = relax.VirtualMachine(tvm.runtime.load_module(str(tmp_path / "b" / "model.so")), tvm.cpu())
    got = vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()
    want = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())


@pytest.mark.slow
def test_tune_resumes_from_its_database(cli, tmp_path, tiny_onnx):
    """A second run with the same database tunes nothing again: every workload is reused."""
    code, _, err = _tune(cli, tiny_onnx, tmp_path / "db", tmp_path / "b")
    assert code == 0, err
    first = json.loads((tmp_path / "b" / "tuning.json").read_text())
    assert sum(c["counters"].get("tuning_tuned", 0) for c in first["configs"]) >= 2
    code, _, err = _tune(cli, tiny_onnx, tmp_path / "db", tmp_path / "b2")
    assert code == 0, err
    again = json.loads((tmp_path / "b2" / "tuning.json").read_text())
    counters = [c["counters"] for c in again["configs"] if c["latency_ms"] is not None]
    assert counters and all(c["tuning_tuned"] == 0 and c["tuning_reused"] >= 1 for c in counters)


def _dynamic(path, tiny_onnx, dim: int):
    model = onnx.load(str(tiny_onnx))
    model.graph.input[0].type.tensor_type.shape.dim[dim].dim_param = "n"
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("argv, message", [
    (["--onnx", "{tiny}", "--minutes", "0"], "--minutes must be > 0, got 0"),
    (["--onnx", "{tiny}", "--minutes", "-2"], "--minutes must be > 0, got -2"),
    (["--onnx", "{batch}", "--minutes", "1"], "input 'input' of .* has a dynamic batch dimension \\(n\\)"),
    (["--onnx", "{height}", "--minutes", "1"], "input 'input' has a symbolic dimension 2 \\(n\\)"),
    (["--onnx", "{missing}", "--minutes", "1"], "ONNX file not found"),
    (["--onnx", "{text}", "--minutes", "1"], "is not a valid ONNX model"),
    (["--onnx", "{tiny}", "--minutes", "1", "--target", "mcu:stm32f746"], "target mcu:stm32f746 has no tuned variant"),
    (["--onnx", "{tiny}", "--minutes", "1", "--threads", "99"], "--threads must be between 1 and"),
    (["--onnx", "{tiny}", "--minutes", "1", "--trials", "0"], "--trials must be >= 1, got 0"),
])
def test_tune_bad_input_gets_one_line_and_exit_2(cli, tmp_path, tiny_onnx, argv, message):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    subs = {"{tiny}": str(tiny_onnx), "{missing}": str(tmp_path / "nope.onnx"), "{text}": str(text),
            "{batch}": str(_dynamic(tmp_path / "batch.onnx", tiny_onnx, 0)),
            "{height}": str(_dynamic(tmp_path / "height.onnx", tiny_onnx, 2))}
    code, out, err = cli("tune", *[subs.get(a, a) for a in argv], "--out", tmp_path / "out")
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "out").exists()
