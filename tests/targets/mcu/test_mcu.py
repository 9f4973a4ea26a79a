"""The mcu:<board> target: boards as data, costs, the C bundle built with arm-none-eabi-gcc and run
under qemu-system-arm (its output must equal the host int8 reference exactly), the CLI, a search and the
accuracy of the deployed int8 network.

Tests that need the toolchain skip with the reason when it is missing (scripts/setup_mcu.sh installs it;
scripts/test.sh runs that first).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hwnas.errors import CompileError, InvalidConfigError, UnknownTargetError
from hwnas.ir import lower
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.targets import get_target
from hwnas.targets.mcu import toolchain as mcu_toolchain
from hwnas.targets.mcu.boards import BOARDS, Board, get_board, register_board
from hwnas.targets.mcu.bundle import QEMU_MACHINES

needs_toolchain = pytest.mark.skipif(
    bool(mcu_toolchain.missing_tools(qemu=True)),
    reason=f"MCU toolchain missing ({', '.join(mcu_toolchain.missing_tools(qemu=True))}): "
    f"{mcu_toolchain.SETUP_HINT}",
)


class Small(nn.Module):
    """An inverted-residual network in miniature (depthwise, residual, pooling, classifier)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6())
        self.block = nn.Sequential(
            nn.Conv2d(8, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
            nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), nn.BatchNorm2d(32), nn.ReLU6(),
            nn.Conv2d(32, 8, 1, bias=False), nn.BatchNorm2d(8),
        )
        self.down = nn.Sequential(nn.Conv2d(8, 16, 3, 2, 1, groups=8), nn.ReLU6())
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.block(x)
        return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(self.down(x), 1), 1))


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = Small()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return lower.export_onnx(net.eval(), (1, 3, 24, 24), tmp_path_factory.mktemp("mcu") / "small.onnx")


@pytest.fixture(scope="module")
def small_f746(small_onnx):
    """Small on stm32f746 with the default knobs, evaluated once for the tests below."""
    if mcu_toolchain.missing_tools(qemu=True):
        pytest.skip(f"MCU toolchain missing: {mcu_toolchain.SETUP_HINT}")
    target = get_target("mcu:stm32f746")
    return target, evaluate(Candidate.from_onnx(small_onnx, {}), target)


# ------------------------------------------------------------------------------------------ boards


def test_builtin_boards_are_data_with_sources():
    expected = {"stm32f746": ("cortex-m7", 216, 320, 1024), "stm32h743": ("cortex-m7", 480, 512, 2048),
                "nrf52840": ("cortex-m4", 64, 256, 1024)}
    for name, (core, mhz, sram, flash) in expected.items():
        b = BOARDS[name]
        assert (b.core, b.clock_mhz, b.sram_kb, b.flash_kb) == (core, mhz, sram, flash)
        assert b.source and get_target(f"mcu:{name}").board is b


def test_users_add_boards():
    board = register_board(Board(name="testboard-m4", core="cortex-m4", clock_mhz=80, sram_kb=64, flash_kb=256,
                                 flash_origin=0x08000000, sram_origin=0x20000000, source="a test"))
    try:
        t = get_target("mcu:testboard-m4")
        assert t.board is board and t.spec == "mcu:testboard-m4"
        assert "testboard-m4" in type(t).variants
        with pytest.raises(InvalidConfigError, match="already registered"):
            register_board(Board(name="testboard-m4", core="cortex-m7", clock_mhz=1, sram_kb=1, flash_kb=1,
                                 flash_origin=0, sram_origin=0, source="x"))
    finally:
        BOARDS.pop("testboard-m4")


@pytest.mark.parametrize("field,value,match", [
    ("core", "cortex-a53", "core must be"), ("sram_kb", 0, "positive"), ("name", "Bad Name", "board name"),
    ("source", "", "datasheet"), ("sram_origin", -1, "address"),
])
def test_bad_boards_are_refused(field, value, match):
    spec = dict(name="b", core="cortex-m4", clock_mhz=1, sram_kb=1, flash_kb=1, flash_origin=0, sram_origin=0,
                source="s")
    spec[field] = value
    with pytest.raises(InvalidConfigError, match=match):
        Board(**spec)


def test_unknown_or_missing_board_names_the_boards():
    for spec in ("mcu", "mcu:esp32"):
        with pytest.raises(InvalidConfigError, match="boards: nrf52840, stm32f746, stm32h743"):
            get_target(spec)
    with pytest.raises(UnknownTargetError):
        get_target("mcux:stm32f746")
    assert get_board("nrf52840").core == "cortex-m4"


def test_hardware_space_knobs():
    space = get_target("mcu:stm32f746").hardware_space
    assert set(space.params) == {"exec_order", "inplace_dw", "tile", "tile_rows", "pad", "weight_bits",
                                 "weight_bits_first", "weight_bits_last", "weight_bits_dw", "activation_bits",
                                 "weight_scheme"}
    assert space.validate({})["weight_bits"] == 8 and space.validate({})["activation_bits"] == 8
    assert space.validate({})["exec_order"] == "min_memory"
    with pytest.raises(InvalidConfigError):
        space.validate({"tile": 3})


# ------------------------------------------------------------------------------------------ costs


@needs_toolchain
def test_costs_come_from_the_plan_and_the_cross_built_objects(small_onnx, small_f746):
    target, ev = small_f746
    built, m = ev.built, ev.metrics
    assert set(m) >= {"latency_ms", "peak_memory_kb", "flash_kb", "params_kb", "macs"}
    # SRAM: the arena (int8 activations, input and output) plus the largest kernel workspace
    assert m["peak_memory_kb"] * 1024 == built.plan.arena_bytes + built.workspace_heap + built.workspace_stack
    assert built.plan.arena_bytes >= 3 * 24 * 24  # at least the int8 input
    # flash: int8 weights plus code
    assert m["params_kb"] * 1024 == sum(t.nbytes for t in built.graph.tensors.values() if t.role == "weight")
    assert m["flash_kb"] > m["params_kb"]
    assert 0 < m["latency_ms"] < 1000
    again = target.cost(built, method="model")
    assert again["flash_kb"] == m["flash_kb"] and again["latency_ms"] == m["latency_ms"]
    # smaller accumulator tiles: less SRAM, same flash order of magnitude
    small = evaluate(Candidate.from_onnx(small_onnx, {"tile": 1, "tile_rows": 1, "inplace_dw": "off"}), target)
    big = evaluate(Candidate.from_onnx(small_onnx, {"tile": 0, "inplace_dw": "off"}), target)
    assert small.metrics["peak_memory_kb"] < big.metrics["peak_memory_kb"]


def _bundle_run(target, ev, folder: Path):
    files = target.emit(ev.built, folder)
    mcu_toolchain.make(folder, "app.elf")
    run = mcu_toolchain.run_qemu(folder, QEMU_MACHINES[target.board.core], target.board.core)
    return files, run


@needs_toolchain
@pytest.mark.parametrize("board,hw", [
    ("stm32f746", None),
    ("nrf52840", {"tile": 1, "tile_rows": 2, "pad": "buffer", "inplace_dw": "off", "exec_order": "program"}),
])
def test_bundle_runs_under_qemu_and_equals_the_host_int8_reference(small_onnx, small_f746, tmp_path, board, hw):
    if hw is None:
        target, ev = small_f746
    else:
        target = get_target(f"mcu:{board}")
        ev = evaluate(Candidate.from_onnx(small_onnx, hw), target)
    files, run = _bundle_run(target, ev, tmp_path)
    x_q = target.reference_input(ev.built)
    expected = target.run_reference(ev.built, x_q).ravel().tolist()
    assert run.output == expected
    assert (tmp_path / "expected_output.txt").read_text().split()[1:] == [str(v) for v in expected]
    assert len(set(expected)) > 3  # a real output, not a constant
    # the kernels used at most the workspace the plan reserved, and every kernel call was timed
    assert run.workspace_peak <= ev.built.workspace_heap
    assert (run.workspace_peak > 0) == (ev.built.workspace_heap > 0)
    assert len(run.kernel_ticks) == len(ev.built.graph.calls) and run.ticks >= sum(run.kernel_ticks)
    # the self-contained bundle: C sources, linker scripts and a Makefile
    for name in ("kernels.c", "model.c", "model.h", "main.c", "startup.c", "tvm_shim.h", "input.h", "qemu.ld",
                 "board.ld", "Makefile"):
        assert (tmp_path / name).is_file()
    assert "#include \"tvm/" not in (tmp_path / "kernels.c").read_text()
    # it fits the board: linking with the board's own memory map succeeds
    mcu_toolchain.make(tmp_path, "board.elf")
    size = mcu_toolchain.size(tmp_path / "board.elf")
    assert size.flash <= target.board.flash_kb * 1024


@needs_toolchain
def test_board_link_fails_when_the_network_does_not_fit(small_onnx, tmp_path):
    register_board(Board(name="tiny-m4", core="cortex-m4", clock_mhz=16, sram_kb=8, flash_kb=32,
                         flash_origin=0, sram_origin=0x20000000, source="a test board"))
    try:
        target = get_target("mcu:tiny-m4")
        ev = evaluate(Candidate.from_onnx(small_onnx, {}), target)
        target.emit(ev.built, tmp_path)
        with pytest.raises(CompileError, match="overflow|will not fit"):
            mcu_toolchain.make(tmp_path, "board.elf")
    finally:
        BOARDS.pop("tiny-m4")


#: the cycle model's documented whole-network error against QEMU's (deterministic) instruction count, int8
#: (``hwnas.targets.mcu.target.INSTRUCTIONS_PER_MAC``: at most 9.4 % on the fitted networks, 9.9 % held out)
CYCLE_MODEL_ERROR = 0.10


@needs_toolchain
def test_emulated_latency_and_the_model_estimate(small_f746, monkeypatch):
    from hwnas.arch import get_space
    from hwnas.targets.mcu import target as mcu_target

    target, ev = small_f746
    emulated = target.cost(ev.built, method="emulate")
    model = ev.metrics
    assert emulated["latency_ms"] > 0
    # measured 2026-12-04: the model is 3.6 % under the emulated count here (the knobs the model was fitted with)
    assert abs(model["latency_ms"] / emulated["latency_ms"] - 1) <= CYCLE_MODEL_ERROR
    assert model["peak_memory_kb"] == emulated["peak_memory_kb"] and model["flash_kb"] == emulated["flash_kb"]
    # an mbv2 network, MACs dominating (measured: 4.5 % over), as the model's own networks
    space = get_space("mbv2", resolutions=(64,), widths=(0.35,))
    mbv2 = evaluate(Candidate.from_space(space, space.sample(np.random.default_rng(0)), {"pad": "buffer"}), target)
    instructions = target.cost(mbv2.built, method="emulate")["latency_ms"]
    assert abs(mbv2.metrics["latency_ms"] / instructions - 1) <= CYCLE_MODEL_ERROR
    # the bound is tight enough to catch per-MAC constants 20 % off either way
    table = dict(mcu_target.INSTRUCTIONS_PER_MAC)
    for factor in (0.8, 1.2):
        monkeypatch.setattr(mcu_target, "INSTRUCTIONS_PER_MAC", {k: (a * factor, b) for k, (a, b) in table.items()})
        off = target.cost(mbv2.built, method="model")["latency_ms"]
        assert abs(off / instructions - 1) > CYCLE_MODEL_ERROR, factor


# ------------------------------------------------------------------------------------------ accuracy


def test_train_evaluates_the_deployed_int8_network():
    from hwnas.arch import get_space
    from hwnas.accuracy import get_accuracy

    space = get_space("mbv2", resolutions=(32,), widths=(0.5,))
    genome = [0] * space.size
    target = get_target("mcu:stm32f746")
    calls = []

    def deploy(model, shape, calibration):
        calls.append(calibration.shape)
        return target.deploy_network(model, shape, calibration, {})

    evaluator = get_accuracy("train", max_steps=40, time_budget_s=None, epochs=1)
    fp32 = evaluator.evaluate_detailed(space, genome)
    int8 = evaluator.evaluate_detailed(space, genome, deploy=deploy)
    assert calls == [(64, 3, 32, 32)]  # calibrated on 64 training images
    assert int8.details["deployed"] and not fp32.details["deployed"]
    assert fp32.accuracy > 30  # it learned something in 40 steps
    # measured, not assumed: int8 is close to fp32 but computed separately
    assert abs(int8.accuracy - fp32.accuracy) < 10
    # a proxy cannot measure a deployed network: it ignores the hook
    proxy = get_accuracy("proxy")
    assert proxy.evaluate(space, genome, deploy=deploy) == proxy.evaluate(space, genome)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------ CLI, search


def _cli(*argv, cwd=None):
    return subprocess.run([sys.executable, "-m", "hwnas", *argv], capture_output=True, text=True, timeout=600,
                          cwd=cwd)


def test_cli_lists_the_mcu_target():
    proc = _cli("targets")
    assert proc.returncode == 0
    assert "mcu:<variant>" in proc.stdout and "nrf52840, stm32f746, stm32h743" in proc.stdout
    for knob in ("exec_order", "inplace_dw", "tile_rows", "pad"):
        assert knob in proc.stdout


def test_cli_bad_board_is_one_line():
    proc = _cli("compile", "--space", "mbv2", "--target", "mcu:esp32", "--out", "/tmp/never-written")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "boards: nrf52840, stm32f746, stm32h743" in proc.stderr


@needs_toolchain
def test_cli_compile_writes_a_bundle_that_builds(small_onnx, tmp_path):
    out = tmp_path / "bundle"
    proc = _cli("compile", "--onnx", str(small_onnx), "--target", "mcu:nrf52840", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "peak_memory_kb" in proc.stdout and "flash_kb" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runtime"]["board"]["name"] == "nrf52840"
    assert manifest["fits"] is True and manifest["overflow"] == {}
    assert manifest["capacity"] == {"peak_memory_kb": 256, "flash_kb": 1024}
    assert manifest["runtime"]["quantization"]["input_scale"] > 0
    run = subprocess.run(["make", "-s", "-C", str(out), "run"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0
    expected = (out / "expected_output.txt").read_text().strip()
    assert expected in run.stdout


@pytest.fixture(scope="module")
def wide_onnx(tmp_path_factory) -> Path:
    """A network whose activations alone exceed nrf52840's 256 KiB of SRAM: the int8 input 3x128x128 (48 KiB)
    and the conv's output 16x128x128 (256 KiB at int8; the plan holds it as int32 until requantized, 1 MiB)
    are live together."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(16, 10))
    return lower.export_onnx(net.eval(), (1, 3, 128, 128), tmp_path_factory.mktemp("mcu") / "wide.onnx")


@needs_toolchain
def test_cli_compile_of_a_network_over_the_boards_sram_says_so_and_fails(wide_onnx, tmp_path):
    out = tmp_path / "bundle"
    proc = _cli("compile", "--onnx", str(wide_onnx), "--target", "mcu:nrf52840", "--out", str(out))
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.startswith("hwnas:")]
    assert len(lines) == 1 and "does not fit mcu:nrf52840 (peak_memory_kb" in lines[0], proc.stderr
    assert "--allow-overflow" in lines[0]
    manifest = json.loads((out / "manifest.json").read_text())
    peak = manifest["metrics"]["peak_memory_kb"]
    assert peak * 1024 >= (3 + 4 * 16) * 128 * 128 > 256 * 1024
    assert manifest["fits"] is False and manifest["overflow"] == {"peak_memory_kb": {"value": peak, "limit": 256}}
    # the manifest is right: the board link fails
    with pytest.raises(CompileError, match="will not fit in region `RAM'|RAM' overflowed"):
        mcu_toolchain.make(out, "board.elf")
    # asked for anyway: the same bundle, exit 0, a warning
    again = _cli("compile", "--onnx", str(wide_onnx), "--target", "mcu:nrf52840", "--out", str(tmp_path / "b2"),
                 "--allow-overflow")
    assert again.returncode == 0, again.stderr
    assert "hwnas: warning: the network does not fit mcu:nrf52840" in again.stderr
    assert json.loads((tmp_path / "b2" / "manifest.json").read_text())["fits"] is False


@needs_toolchain
@pytest.mark.slow
@pytest.mark.parametrize("formulation", ["fit-first", "nsga2"])
def test_search_with_memory_constraints(tmp_path, formulation):
    from hwnas.search.config import SearchConfig
    from hwnas.search.driver import Search

    cfg = SearchConfig(targets=("mcu:stm32f746",), space="mbv2",
                       space_options={"resolutions": [32, 64], "widths": [0.25, 0.5]},
                       objectives=("accuracy", "latency_ms"),
                       constraints=("peak_sram_kb<=320", "flash_kb<=1024"), formulation=formulation,
                       budget=3, pop_size=2, workers=1, seed=1)
    search = Search(cfg, tmp_path / "run")
    search.run()
    points = search.all_points()
    assert len(points) == 3
    ok = [p for p in points if p.status == "ok"]
    assert ok, [p.error for p in points]
    for p in ok:
        m = p.metrics["mcu:stm32f746"]
        assert m["peak_memory_kb"] > 0 and m["flash_kb"] > 0 and "accuracy" in m
    if formulation == "fit-first":
        assert len(search.narrowed) == search.joint.size


@needs_toolchain
@pytest.mark.slow
@pytest.mark.parametrize("board,hw", [
    ("stm32f746", {"tile": 4, "tile_rows": 2, "pad": "inline", "inplace_dw": "on"}),
    ("stm32h743", {"tile": 0, "pad": "buffer", "inplace_dw": "off", "exec_order": "program"}),
    ("nrf52840", {"tile": 16, "tile_rows": 1, "pad": "buffer", "inplace_dw": "on"}),
])
def test_mbv2_bundles_under_qemu_equal_the_reference(tmp_path, board, hw):
    from hwnas.arch import get_space

    space = get_space("mbv2", resolutions=(64,), widths=(0.35,))
    genome = space.sample(np.random.default_rng(len(board)))
    target = get_target(f"mcu:{board}")
    ev = evaluate(Candidate.from_space(space, genome, hw), target)
    _, run = _bundle_run(target, ev, tmp_path)
    expected = target.run_reference(ev.built, target.reference_input(ev.built)).ravel().tolist()
    assert run.output == expected
    assert run.workspace_peak <= ev.built.workspace_heap
