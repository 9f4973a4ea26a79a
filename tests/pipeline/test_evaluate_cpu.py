"""The CPU target end to end: lower, passes, compile, run, measure; numerics against ONNX Runtime."""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.arch import get_space
from hwnas.errors import InvalidConfigError, InvalidGenomeError, UnknownTargetError
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.ir.lower import export_onnx
from hwnas.targets import get_target, target_names
from hwnas.ir.runtime import random_inputs, run_vm


@pytest.fixture(scope="module")
def cpu():
    t = get_target("cpu")
    t.repeats = 3
    t.min_repeat_ms = 5
    return t


def tiny_net():
    torch.manual_seed(1)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, padding=1, groups=16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 24, 1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 10),
    ).eval()


def ort_reference(onnx_path, arrays):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], arrays)))[0]


def test_registry_answers_unknown_names_with_the_known_ones():
    assert "cpu" in target_names()
    with pytest.raises(UnknownTargetError, match="unknown target 'tpu'; known: .*cpu"):
        get_target("tpu")
    with pytest.raises(InvalidConfigError, match="takes no variant"):
        get_target("cpu:fast")


@pytest.mark.parametrize(
    "hw",
    [
        {},
        {"layout": "NCHWc", "pack": 8, "tile_oc": 16, "vector_width": 8},
        {"tile_oc": 4, "tile_ow": 16, "tile_rc": 2, "vector_width": 4, "unroll": 0, "num_threads": 1},
    ],
)
def test_onnx_candidate_matches_onnx_runtime(tmp_path, cpu, hw):
    path = export_onnx(tiny_net(), (1, 3, 20, 20), tmp_path / "net.onnx")
    ev = evaluate(Candidate.from_onnx(path, hw), cpu)
    arrays = list(random_inputs(ev.built.inputs, seed=3).values())
    out = run_vm(ev.built.executable, arrays)[0]
    np.testing.assert_allclose(out, ort_reference(path, arrays), rtol=1e-4, atol=1e-4)
    m = ev.metrics
    assert m["latency_ms"] > 0 and m["latency_std_ms"] >= 0
    assert m["macs"] == 20 * 20 * 16 * 27 + 20 * 20 * 16 * 9 + 20 * 20 * 24 * 16 + 24 * 10
    # weights: conv 16x3x3x3+16, dw 16x1x3x3+16, pw 24x16+24, fc 10x24+10 floats (packing may pad, never shrink)
    assert m["params_kb"] * 1024 >= 4 * (448 + 160 + 408 + 250)
    # the largest activation (16x20x20 floats) must be in the peak, and the peak is bounded by all of them
    assert 16 * 20 * 20 * 4 <= m["peak_memory_kb"] * 1024 < 10 * 16 * 22 * 22 * 4
    assert set(ev.timings) == {"export_s", "import_s", "passes_s", "compile_s", "cost_s"}


@pytest.mark.parametrize("space_name", ["nb201", "fbnet", "mbv2"])
def test_every_space_compiles_and_matches_onnx_runtime(tmp_path, cpu, space_name):
    space = get_space(space_name)
    genome = space.sample(np.random.default_rng(5))
    ev = evaluate(Candidate.from_space(space, genome, {}), cpu, workdir=tmp_path)
    assert ev.onnx_path == tmp_path / "model.onnx" and ev.onnx_path.is_file()
    arrays = list(random_inputs(ev.built.inputs, seed=1).values())
    out = run_vm(ev.built.executable, arrays)[0]
    assert out.shape == (1, space.num_classes)
    np.testing.assert_allclose(out, ort_reference(ev.onnx_path, arrays), rtol=1e-4, atol=1e-4)
    assert ev.metrics["macs"] > 0


def test_bad_candidates_fail_before_any_work(cpu):
    space = get_space("nb201")
    with pytest.raises(InvalidGenomeError, match="genome must have 6 genes, got 2"):
        Candidate.from_space(space, [0, 1], {})
    with pytest.raises(InvalidConfigError, match="unknown hardware knob 'tile'"):
        evaluate(Candidate.from_space(space, [0] * 6, {"tile": 8}), cpu)
    with pytest.raises(InvalidConfigError, match="invalid value 3 for 'tile_oc'"):
        evaluate(Candidate.from_space(space, [0] * 6, {"tile_oc": 3}), cpu)
    with pytest.raises(InvalidConfigError, match="no cost method 'guess'"):
        evaluate(Candidate.from_space(space, [0] * 6, {}), cpu, cost="guess")
