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
    t.set_measure_options(repeats=3, min_repeat_ms=5)
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
    # peak activation memory, from the tensor shapes (float32): the static plan must hold
    #   io: the input 3x20x20 and the output 10, for the whole run;
    #   arena: the two largest tensors live at once, the dw output 16x20x20 while the pw conv writes 24x20x20
    #     (the conv1 output 16x20x20 reuses a storage), plus the pooled 24 (the reshape is a view);
    #   workspace: the largest kernel's internal buffers, at most (kernels run one at a time) the padded
    #     16x22x22 input and the unfused 16x20x20 result of the dw conv (schedules may inline them: >= 0)
    io = 4 * (3 * 20 * 20 + 10)
    arena = 4 * (16 * 20 * 20 + 24 * 20 * 20 + 24)
    workspace_max = 4 * (16 * 22 * 22 + 16 * 20 * 20)
    plan = ev.built.facts["memory"]
    assert (plan["io"], plan["arena"]) == (io, arena)
    assert 0 <= plan["workspace"] <= workspace_max
    assert io + arena <= m["peak_memory_kb"] * 1024 == plan["io"] + plan["arena"] + plan["workspace"] <= io + arena + workspace_max
    assert set(ev.timings) == {"export_s", "import_s", "passes_s", "compile_s", "cost_s", "unscheduled_kernels"}
    assert ev.unscheduled == [] and ev.timings["unscheduled_kernels"] == 0  # every rule did what it was asked


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


def test_a_conv_its_rule_fails_on_is_reported_by_the_evaluation_and_warned_once(tmp_path, cpu, monkeypatch,
                                                                                  caplog):
    """Fault injection into the real CPU conv rule: it raises on depthwise convs (as a rule that meets a
    conv it cannot handle does). Those kernels get TVM's default schedule, not the asked-for config, and
    the evaluation must say so; the warning comes once per (pass, reason), not once per kernel/candidate."""
    import logging

    from hwnas.ir import schedule
    from hwnas.targets.cpu import tile_conv2d

    real = tile_conv2d.schedule_conv2d

    def failing_on_depthwise(sch, cfg):
        if any(sch.get(b).name_hint == "group_conv2d_nchw" for b in schedule.root_blocks(sch)):
            raise ValueError("cannot tile a depthwise conv\nsecond line of the message")
        return real(sch, cfg)

    monkeypatch.setattr(tile_conv2d, "schedule_conv2d", failing_on_depthwise)
    monkeypatch.setattr(schedule, "_WARNED", set())
    path = export_onnx(tiny_net(), (1, 3, 20, 20), tmp_path / "net.onnx")
    with caplog.at_level(logging.WARNING, logger="hwnas"):
        evs = [evaluate(Candidate.from_onnx(path, {}), cpu) for _ in range(2)]
    for ev in evs:
        assert len(ev.unscheduled) == 1 and not ev.as_configured
        (record,) = ev.unscheduled
        assert record["function"] == "fused_conv2d1_add_relu"  # the depthwise conv, the second of the net
        assert record["pass"] == "TileConv2d"
        assert record["error"] == "ValueError: second line of the message"
        assert ev.built.facts["unscheduled"] == ev.unscheduled
        assert ev.timings["unscheduled_kernels"] == 1
        # the kernel still computes the right thing, with the default schedule
        arrays = list(random_inputs(ev.built.inputs, seed=3).values())
        np.testing.assert_allclose(run_vm(ev.built.executable, arrays)[0], ort_reference(path, arrays),
                                   rtol=1e-4, atol=1e-4)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "TileConv2d" in r.getMessage()]
    assert len(warnings) == 1 and "second line of the message" in warnings[0].getMessage()


def test_every_kernel_scheduled_as_asked_reports_none(tmp_path, cpu):
    path = export_onnx(tiny_net(), (1, 3, 20, 20), tmp_path / "net.onnx")
    ev = evaluate(Candidate.from_onnx(path, {}), cpu)
    assert ev.unscheduled == [] and ev.as_configured and ev.timings["unscheduled_kernels"] == 0
