"""The command line: listings, a real compile, and one clear line for every bad input."""

import json
import os
import re
import subprocess
import sys

import pytest
import torch

from hwnas.ir.lower import export_onnx




@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(8 * 6 * 6, 5)).eval()
    return export_onnx(net, (1, 3, 8, 8), tmp_path_factory.mktemp("m") / "user.onnx")


def test_targets_lists_every_knob_with_its_range(cli):
    code, out, _ = cli("targets")
    assert code == 0
    for knob in ("layout", "tile_oc", "tile_rc", "loop_order", "parallel", "vector_width", "unroll", "num_threads"):
        assert knob in out
    assert "2^k in 1..64" in out and "latency_ms" in out


def test_spaces_lists_the_builtins(cli):
    code, out, _ = cli("spaces")
    assert code == 0 and all(s in out for s in ("nb201", "fbnet", "mbv2"))


def test_compile_own_onnx_writes_a_bundle(cli, tmp_path, onnx_file):
    code, out, err = cli("compile", "--onnx", str(onnx_file), "--hw", '{"tile_oc": 4}',
                         "--repeats", "2", "--out", str(tmp_path / "b"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["hw"]["tile_oc"] == 4
    assert manifest["architecture"]["onnx_sha256"]
    assert "latency_ms" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compile", "--space", "resnet", "--out", "{o}"], "unknown space 'resnet'; known: fbnet, mbv2, nb201"),
        (["compile", "--space", "nb201", "--target", "tpu", "--out", "{o}"], "unknown target 'tpu'; known: .*cpu"),
        (["compile", "--space", "nb201", "--genome", "[0,1]", "--out", "{o}"], "genome must have 6 genes, got 2"),
        (["compile", "--space", "nb201", "--genome", "[0,1,2,3,5,0]", "--out", "{o}"], "gene 4 .* must be in 0..4, got 5"),
        (["compile", "--space", "nb201", "--genome", "zero", "--out", "{o}"], "--genome must be JSON"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--hw", '{"tile": 4}', "--out", "{o}"],
         "unknown hardware knob 'tile'"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--hw", '{"vector_width": 3}', "--out", "{o}"],
         "invalid value 3 for 'vector_width'"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--hw", "[1]", "--out", "{o}"],
         "--hw must be a JSON object"),
        (["compile", "--onnx", "{missing}", "--out", "{o}"], "ONNX file not found"),
        (["compile", "--onnx", "{text}", "--out", "{o}"], "is not a valid ONNX model"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--out", "{text}/sub/b"], "cannot create output folder"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--cost", "guess", "--out", "{o}"],
         "no cost method 'guess'; it has: measure, lut, analytical, predictor"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--cost", "predictor", "--out", "{o}"],
         "needs a trained model: --cost predictor:MODEL.json"),
        (["compile", "--space", "nb201", "--genome", "[0,0,0,0,0,0]", "--cost", "predictor:{missing}", "--out", "{o}"],
         "predictor model .*nope.onnx does not exist"),
        (["search", "--space", "nb201", "--cost", "lut", "--ladder", "guess", "--out", "{o}"],
         "no cost method 'guess'"),
        (["search", "--space", "mbv2", "--accuracy", "table", "--out", "{o}"],
         "table evaluator has accuracies for nb201 only"),
        (["search", "--space", "nb201", "--space-option", "cells_per_stage=1", "--accuracy", "table", "--out", "{o}"],
         "accuracies are for nb201 with channels=16, cells_per_stage=5; this space has cells_per_stage=1"),
        (["predictor", "train", "--samples", "2", "--out", "{o}"], "--samples must be >= 5, got 2"),
        (["predictor", "train", "--kind", "svm", "--out", "{o}"], "unknown --kind 'svm'; known: xgb, mlp"),
        (["bench", "cost-models", "--n", "3", "--out", "{o}"], "--n must be >= 10"),
        (["bench", "cost-models", "--target", "mcu:stm32f746", "--n", "2", "--out", "{o}"], "--n must be >= 3"),
        (["bench", "cost-models", "--target", "asic", "--out", "{o}"],
         r"target asic has one cost method \(analytical\): nothing to compare it with"),
        (["bench", "cost-models", "--target", "published:raspi4", "--out", "{o}"],
         "prices architectures without compiling them"),
        (["predictor", "train", "--target", "mcu:stm32f746", "--out", "{o}"],
         "target mcu:stm32f746 takes no trained predictor; its cost methods: model, emulate"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_bad_input_gets_one_line_and_exit_2(cli, tmp_path, argv, message):
    text = tmp_path / "notes.onnx"
    text.write_text("not a model")
    subs = {"{o}": str(tmp_path / "out"), "{missing}": str(tmp_path / "nope.onnx"), "{text}": str(text)}

    def fill(arg):
        for key, value in subs.items():
            arg = arg.replace(key, value)
        return arg

    code, out, err = cli(*[fill(a) for a in argv])
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("no --genome")]
    assert len(lines) == 1, err
    assert re.search(message, lines[0]), lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_a_real_process_prints_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "hwnas", "compile", "--space", "mbv2", "--genome", "[9]",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("hwnas: error: mbv2: genome must have")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_the_bench_compares_what_each_target_declares():
    from hwnas.cli.bench import bench_methods
    from hwnas.targets import get_target

    assert bench_methods(get_target("cpu")) == ("measure", ("lut", "analytical"), ("predictor-xgb", "predictor-mlp"))
    assert bench_methods(get_target("mcu:stm32f746")) == ("emulate", ("model",), ())
    assert bench_methods(get_target("asic")) == ("analytical", (), ())
    assert bench_methods(get_target("gpu:h100")) == ("measure", ("analytical",), ())


@pytest.mark.slow
def test_bench_cost_models_runs_on_a_microcontroller(cli, tmp_path):
    """About 2 minutes: 3 mbv2 candidates built for the board, each emulated in QEMU and modelled."""
    import shutil

    if shutil.which("qemu-system-arm") is None or shutil.which("arm-none-eabi-gcc") is None:
        pytest.skip("the MCU toolchain is missing: bash scripts/setup_mcu.sh")
    code, out, err = cli("bench", "cost-models", "--target", "mcu:stm32f746", "--space", "mbv2", "--n", "3",
                         "--search-budget", "1", "--out", str(tmp_path / "b"))
    assert code == 0, err
    result = json.loads((tmp_path / "b" / "cost_models.json").read_text())
    assert result["reference"] == "emulate" and [r["method"] for r in result["table"]] == ["emulate", "model"]
    assert result["n"] == 3 and result["train"] == 0
    emulate = next(r for r in result["table"] if r["method"] == "emulate")
    assert emulate["mape_pct"] == 0 and emulate["kendall_tau"] == 1
    assert "judged against emulate" in out


def test_tvm_thread_pool_is_sized_to_the_cores_when_hwnas_is_imported():
    """Unset, TVM_NUM_THREADS makes TVM's pool half the hardware threads (one worker on a 2-core machine), too
    small for the 2-thread candidates hwnas measures there (2x slower than 1 thread); hwnas sets it first."""
    env = {k: v for k, v in os.environ.items() if k != "TVM_NUM_THREADS"}
    code = "import hwnas, tvm; print(tvm.get_global_func('runtime.NumThreads')())"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) == len(os.sched_getaffinity(0))


@pytest.mark.slow
def test_predictor_build_resumes_and_the_bench_judges_it_on_other_networks(cli, tmp_path):
    """About 6 minutes: a kernel set built, built again on the same store (it keeps what it had), and the
    kernel predictor judged by the bench on 10 candidates the kernel set was not drawn from."""
    model = tmp_path / "cpu.json"
    code, out, err = cli("predictor", "build", "--target", "cpu", "--minutes", "0.7", "--out", model)
    assert code == 0, err
    first = json.loads(model.read_text())["metadata"]
    code, out, err = cli("predictor", "build", "--target", "cpu", "--minutes", "0.5", "--out", model, "--overwrite")
    assert code == 0, err
    second = json.loads(model.read_text())["metadata"]
    assert second["kernels"] > first["kernels"]
    assert [tuple(map(str, n)) for n in first["networks"]] == [tuple(map(str, n)) for n in second["networks"]][
        :len(first["networks"])]
    code, out, err = cli("bench", "cost-models", "--target", "cpu", "--space", "nb201", "--n", "10", "--seed", "5",
                         "--search-budget", "0", "--kernel-model", model, "--out", tmp_path / "b")
    assert code == 0, err
    result = json.loads((tmp_path / "b" / "cost_models.json").read_text())
    drawn = {json.dumps(n) for n in second["networks"]}
    assert not any(json.dumps(["nb201", r["genome"]]) in drawn for r in result["rows"])
    kernel = next(r for r in result["table"] if r["method"] == "predictor-kernel")
    assert kernel["estimate_s"] > 0 and all(r["kernel_lower_s"] < r["predictor-kernel_s"] for r in result["rows"])
    assert "per estimate" in out and "noise floor" in out
