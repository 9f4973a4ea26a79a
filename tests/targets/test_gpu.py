"""The GPU target without a GPU: CUDA generation, nvcc, limits, the analytical estimate, fp16 numerics.

Builds are real (TVM CUDA codegen, nvcc/ptxas when on PATH); nothing runs on
a GPU here. The opt-in ``gpu`` tests at the end run the built modules on
``tvm.cuda(0)`` and compare with ONNX Runtime.
"""

from __future__ import annotations

import dataclasses
import re
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from hwnas.errors import InvalidConfigError
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.ir.lower import export_onnx
from hwnas.targets import get_target
from hwnas.targets.gpu.cost import estimate
from hwnas.targets.gpu.devices import DEVICES, GpuDevice
from hwnas.ir.workloads import extract

needs_nvcc = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")


def conv_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 20, 3, padding=1), nn.BatchNorm2d(20), nn.ReLU(),
        nn.Conv2d(20, 24, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(24, 24, 3, padding=1, groups=24), nn.ReLU(),
        nn.Conv2d(24, 16, 1),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    ).eval()


def mlp() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Flatten(), nn.Linear(48, 40), nn.ReLU(), nn.Linear(40, 10)).eval()


def wide() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.ReLU()).eval()


NETS = {"conv": (conv_net, (1, 3, 16, 16)), "mlp": (mlp, (1, 3, 4, 4)), "wide": (wide, (1, 64, 32, 32))}
#: the nets built once per module with the default config
BUILT = ("conv", "mlp")


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("gpu-nets")
    return {name: export_onnx(f(), shape, folder / f"{name}.onnx") for name, (f, shape) in NETS.items()}


@pytest.fixture(scope="module")
def h100():
    return get_target("gpu:h100")


@pytest.fixture(scope="module")
def built(onnx_files, h100):
    """name -> Evaluation of the default config on gpu:h100 (analytical)."""
    return {name: evaluate(Candidate.from_onnx(onnx_files[name], {}), h100, cost="analytical") for name in BUILT}


def kernels_in_source(src: str) -> dict[str, tuple[int, int]]:
    """kernel name -> (launch bound threads, static shared bytes) from the CUDA source's definitions
    (each ``alignas(64)`` array rounded up to 64 bytes)."""
    itemsize = {"float": 4, "half": 2, "int": 4, "signed char": 1, "double": 8}
    out = {}
    heads = list(re.finditer(r'extern "C" __global__ void __launch_bounds__\((\d+)\) (\w+)\([^)]*\)\s*([{;])', src))
    for i, m in enumerate(heads):
        if m.group(3) != "{":
            continue  # a declaration, not the definition
        body = src[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(src)]
        smem = sum(-(-itemsize[t] * int(n) // 64) * 64 for t, n in
                   re.findall(r"__shared__ (?:alignas\(\d+\) )?(float|half|int|signed char|double) \w+\[(\d+)\];", body))
        out[m.group(2)] = (int(m.group(1)), smem)
    return out


def test_device_table_is_complete_and_cited():
    assert {"h100", "a100", "rtx4090", "orin", "1080ti", "titanxp"} <= set(DEVICES)
    for d in DEVICES.values():
        for f in dataclasses.fields(GpuDevice):
            v = getattr(d, f.name)
            if isinstance(v, (int, float)) and f.name != "peak_fp16_tensor_tflops":
                assert v > 0, (d.name, f.name)
        assert any(word in d.source.lower() for word in ("whitepaper", "datasheet", "specifications")), d.name
        assert d.fp32_lanes_per_sm in (64, 128), (d.name, d.fp32_lanes_per_sm)
        assert d.smem_per_block_kb <= d.smem_per_block_optin_kb <= d.smem_per_sm_kb
        assert d.max_threads_per_block <= d.max_threads_per_sm
        assert re.fullmatch(r"sm_\d\d", d.arch)


def test_unknown_device_and_variantless_target_are_clear_errors():
    with pytest.raises(InvalidConfigError, match="needs a device, e.g. gpu:h100; devices: h100, h200, a100"):
        get_target("gpu")
    with pytest.raises(InvalidConfigError, match="unknown GPU 'v100'; devices:"):
        get_target("gpu:v100")


def test_threads_over_the_device_limit_are_rejected_at_validation(h100):
    with pytest.raises(InvalidConfigError, match=r"max_threads_per_block=1024"):
        h100.hardware_space.validate({"threads_oc": 64, "threads_oh": 8, "threads_ow": 4})
    assert h100.hardware_space.validate({"threads_oc": 32, "threads_oh": 4, "threads_ow": 8})


def test_measure_without_a_device_is_one_clear_error_and_analytical_is_the_default(h100):
    from hwnas.targets.gpu.target import cuda_present

    if cuda_present():
        pytest.skip("this machine has a CUDA device")
    assert h100.cost_method(None) == "analytical"
    with pytest.raises(InvalidConfigError, match="'measure' needs a CUDA device.*use --cost analytical"):
        h100.cost_method("measure")


@pytest.mark.parametrize("name", BUILT)
def test_generated_cuda_respects_launch_bounds_and_shared_memory(built, h100, name):
    b = built[name].built
    src = b.cuda_source
    assert '__global__' in src
    in_source = kernels_in_source(src)
    launches = {k.name: k for k in b.launches}
    assert set(in_source) == set(launches)
    limit_smem = h100.device.smem_per_block_kb * 1024
    for kname, (bound, smem) in in_source.items():
        k = launches[kname]
        assert bound == k.threads <= h100.device.max_threads_per_block, kname
        assert smem == k.smem_bytes <= limit_smem, kname
    # the hwnas schedules ran on the convs and denses, and staged their operands in shared memory
    from hwnas.ir.schedule import SCHEDULED_ATTR
    from hwnas.ir.lower import prim_funcs

    scheduled = {n for n, f in prim_funcs(b.module).items() if f.attrs is not None and SCHEDULED_ATTR in f.attrs}
    macs = {w.func for w in extract(b.module) if w.macs > 0}
    assert macs and macs <= scheduled
    assert all(launches[f"{f}_kernel"].smem_bytes > 0 for f in macs)


def test_a_conv_its_gpu_rule_fails_on_is_reported_through_the_one_driver(onnx_files, h100, monkeypatch, caplog):
    """Fault injection into the real GPU conv rule (it raises on the depthwise conv): the shared driver of
    :mod:`hwnas.ir.schedule` marks that kernel, dlight still schedules it (the build succeeds), and the
    evaluation reports it, with one warning. Compile only."""
    import logging

    from hwnas.ir import schedule
    from hwnas.targets.gpu import tile_conv2d

    real = tile_conv2d.schedule_gpu_conv2d

    def failing_on_depthwise(sch, cfg):
        if any(sch.get(b).name_hint == "group_conv2d_nchw" for b in schedule.root_blocks(sch)):
            raise RuntimeError("no GPU tiling for a depthwise conv")
        return real(sch, cfg)

    monkeypatch.setattr(tile_conv2d, "schedule_gpu_conv2d", failing_on_depthwise)
    monkeypatch.setattr(schedule, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="hwnas"):
        ev = evaluate(Candidate.from_onnx(onnx_files["conv"], {}), h100, cost="analytical")
    (record,) = ev.unscheduled
    assert record["function"] == "fused_conv2d2_add1_relu1"  # the depthwise (group) conv
    assert record["pass"] == "GpuTileConv2d" and record["error"] == "RuntimeError: no GPU tiling for a depthwise conv"
    assert ev.timings["unscheduled_kernels"] == 1 and not ev.as_configured
    assert f"{record['function']}_kernel" in {k.name for k in ev.built.launches}  # dlight's schedule was built
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "GpuTileConv2d" in r.getMessage()]
    assert len(warnings) == 1


@pytest.mark.parametrize("name", BUILT)
def test_the_default_config_schedules_every_gpu_kernel_as_asked(built, name):
    assert built[name].unscheduled == [] and built[name].timings["unscheduled_kernels"] == 0


@needs_nvcc
@pytest.mark.parametrize("name", BUILT)
def test_nvcc_compiles_every_kernel_and_reports_registers(built, name):
    b = built[name].built
    assert b.nvcc_arch == "sm_90"
    assert set(b.ptxas) == {k.name for k in b.launches}
    for k in b.launches:
        info = b.ptxas[k.name]
        assert 0 < info.registers <= 255
        assert info.smem_bytes <= k.smem_bytes < info.smem_bytes + 64  # ptxas packs the arrays a little tighter


def test_over_limit_shared_memory_is_rejected_before_building(onnx_files, h100):
    hw = {"threads_oc": 32, "threads_oh": 4, "threads_ow": 8, "tile_oc": 8, "tile_rc": 64, "tile_ow": 4}
    with pytest.raises(InvalidConfigError, match=r"bytes of shared memory per block, over the device limit "
                                                 r"max_shared_memory_per_block=49152"):
        evaluate(Candidate.from_onnx(onnx_files["wide"], hw), h100, cost="analytical")
    # the same tiles without staging fit
    ev = evaluate(Candidate.from_onnx(onnx_files["wide"], {**hw, "shared": "none"}), h100, cost="analytical")
    assert all(k.smem_bytes == 0 for k in ev.built.launches if k.func.startswith("fused_conv2d"))


def test_analytical_estimate_is_positive_deterministic_and_monotone_in_the_device(built, h100):
    b = built["conv"].built
    lat = built["conv"].metrics["latency_ms"]
    assert lat > 0
    again, rows = h100.estimate(b)
    assert again == lat and all(r.time_ms > 0 and 0 < r.occupancy <= 1 for r in rows)
    work = extract(b.module)
    dev = h100.device

    def est(d):
        return estimate(d, work, b.launches, b.ptxas)[0]

    # more bandwidth, more FLOPs, or a cheaper launch never makes it slower
    assert est(dataclasses.replace(dev, dram_bandwidth_gbs=dev.dram_bandwidth_gbs * 4)) <= lat
    assert est(dataclasses.replace(dev, peak_fp32_tflops=dev.peak_fp32_tflops * 4)) <= lat
    assert est(dataclasses.replace(dev, launch_overhead_us=1.0)) < lat
    # a slow-memory device is slower on the same kernels
    assert est(dataclasses.replace(dev, dram_bandwidth_gbs=dev.dram_bandwidth_gbs / 100)) > lat
    # the Jetson is slower than the H100
    assert est(DEVICES["orin"]) > lat
    # the launch overhead is a floor: one per kernel call
    assert lat >= sum(w.calls for w in work if any(k.func == w.func for k in b.launches)) * dev.launch_overhead_us / 1e3


def test_estimate_follows_the_knobs(onnx_files):
    """fp16 is 1/64 rate on Pascal: slower than fp32 there; a 1-thread block is slower than the default."""
    t = get_target("gpu:1080ti")
    path = onnx_files["conv"]

    def lat(hw):
        return evaluate(Candidate.from_onnx(path, hw), t, cost="analytical").metrics["latency_ms"]

    base = lat({})
    assert lat({"precision": "fp16"}) > base
    assert lat({"threads_oc": 1, "threads_oh": 1, "threads_ow": 1, "tile_oc": 1, "tile_ow": 1}) > base


def test_fp16_module_matches_onnx_runtime_on_the_cpu(onnx_files):
    """The precision knob's graph pass, compiled for LLVM: float16 compute within a loose tolerance."""
    import tvm
    from tvm import relax

    from hwnas.passes.to_float16 import ToFloat16
    from hwnas.ir.lower import compile_module, fuse, load_onnx, to_relax

    path = onnx_files["conv"]
    mod = fuse(ToFloat16()(to_relax(load_onnx(path))))
    assert 'dtype="float16"' in mod.script()
    ex = compile_module(mod, tvm.target.Target({"kind": "llvm"}))
    x = np.random.default_rng(0).standard_normal(NETS["conv"][1]).astype("float32")
    out = relax.VirtualMachine(ex, tvm.cpu())["main"](tvm.runtime.tensor(x)).numpy()
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)


@needs_nvcc
def test_bundle_holds_library_source_and_fatbin_and_says_it_is_unverified(tmp_path, built):
    import json

    from hwnas.pipeline.artifacts import verify_bundle, write_bundle

    manifest = write_bundle(built["mlp"], tmp_path / "bundle")
    m = verify_bundle(manifest.parent)
    assert m["runtime"]["device"] == "cuda" and m["runtime"]["arch"] == "sm_90"
    assert m["runtime"]["verified_run"] is False and "estimate" in m["runtime"]["latency"]
    assert {"library", "cuda_source", "fatbin", "onnx", "runner"} <= set(m["files"])
    assert (manifest.parent / "kernels.fatbin").stat().st_size > 0
    assert "__global__" in (manifest.parent / "kernels.cu").read_text()
    assert json.loads(manifest.read_text())["target"] == "gpu:h100"


@pytest.mark.slow
@pytest.mark.parametrize("device", ["a100", "rtx4090", "orin", "titanxp"])
def test_other_devices_build_and_estimate(onnx_files, device):
    ev = evaluate(Candidate.from_onnx(onnx_files["conv"], {"precision": "fp16"}), get_target(f"gpu:{device}"),
                  cost="analytical")
    assert ev.metrics["latency_ms"] > 0
    assert all(k.threads <= 1024 for k in ev.built.launches)


# ---------------------------------------------------------------------------
# Opt-in: a real GPU (pytest --run-gpu)
# ---------------------------------------------------------------------------


def _run_on_cuda(ev, x):
    import tvm
    from tvm import relax

    vm = relax.VirtualMachine(ev.built.executable, tvm.cuda(0))
    return vm["main"](tvm.runtime.tensor(x, tvm.cuda(0))).numpy()


@pytest.mark.gpu
@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize("hw,tol", [
    ({}, 1e-4),
    ({"shared": "none", "threads_oc": 4, "threads_oh": 2, "threads_ow": 16, "tile_oc": 4, "tile_ow": 1}, 1e-4),
    ({"vector_load": 4, "tile_rc": 16, "unroll": 512}, 1e-4),
    ({"precision": "fp16"}, 2e-2),
])
def test_cuda_numerics_match_onnx_runtime(onnx_files, name, hw, tol):
    from hwnas.targets.gpu.target import cuda_present

    if not cuda_present():
        pytest.fail("--run-gpu was given but tvm.cuda(0) does not exist")
    t = get_target("gpu:h100")
    path = onnx_files[name]
    ev = evaluate(Candidate.from_onnx(path, hw), t, cost="measure")
    assert ev.metrics["latency_ms"] > 0
    x = np.random.default_rng(3).standard_normal(NETS[name][1]).astype("float32")
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(_run_on_cuda(ev, x), ref, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_a_device_the_local_compiler_lacks_builds_with_source_on_a_gpu_machine(onnx_files, tmp_path):
    # with the CUDA runtime loaded, builds compile their kernels; CUDA 13 cannot compile for Pascal (sm_61)
    import json

    from hwnas.targets.gpu.target import cuda_present
    from hwnas.targets.gpu.kernels import cuda_runtime_loaded, nvcc_archs

    if not cuda_present():
        pytest.fail("--run-gpu was given but tvm.cuda(0) does not exist")
    assert cuda_runtime_loaded()
    on_h100 = evaluate(Candidate.from_onnx(onnx_files["conv"], {}), get_target("gpu:h100"), cost="analytical")
    assert on_h100.built.machine_code and on_h100.built.jit_failed is None
    t = get_target("gpu:titanxp")
    ev = evaluate(Candidate.from_onnx(onnx_files["conv"], {}), t, cost="analytical")
    if "sm_61" in nvcc_archs():
        pytest.skip("this CUDA toolkit still compiles sm_61")
    assert not ev.built.machine_code and "sm_61" in ev.built.jit_failed
    assert ev.metrics["latency_ms"] > 0
    with pytest.raises(InvalidConfigError, match="cannot measure here.*sm_61"):
        t.cost(ev.built, method="measure")
    t.emit(ev.built, tmp_path)
    assert "sm_61" in t.runtime_info(ev.built)["note"]
    assert "__global__" in (tmp_path / "kernels.cu").read_text()
    json.dumps(t.runtime_info(ev.built))


# ---------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------




def test_cli_lists_the_gpu_target_with_its_knobs(cli):
    code, out, _ = cli("targets")
    assert code == 0
    section = out[out.index("gpu:<variant>"):]
    assert "h100, h200, a100, rtx4090, orin, 1080ti, titanxp" in section
    for knob in ("threads_oc", "tile_rc", "shared", "vector_load", "precision"):
        assert knob in section


def test_cli_measure_without_a_device_and_over_limit_threads_are_one_line(cli, tmp_path):
    from hwnas.targets.gpu.target import cuda_present

    if not cuda_present():
        code, _, err = cli("compile", "--space", "nb201", "--genome", "[0,1,2,3,4,0]", "--target",
                            "gpu:h100", "--cost", "measure", "--out", str(tmp_path / "a"))
        assert code == 2 and err.count("\n") == 1 and "needs a CUDA device" in err
    code, _, err = cli("compile", "--space", "nb201", "--genome", "[0,1,2,3,4,0]", "--target", "gpu:h100", "--hw",
                        '{"threads_oc": 64, "threads_oh": 32}', "--out", str(tmp_path / "b"))
    assert code == 2 and err.count("\n") == 1 and "max_threads_per_block=1024" in err


@needs_nvcc
def test_cli_compiles_an_nb201_cell_for_h100(cli, tmp_path):
    import json

    code, out, err = cli("compile", "--space", "nb201", "--genome", "[1,2,3,0,4,2]", "--target", "gpu:h100",
                          "--out", str(tmp_path / "b"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["target"] == "gpu:h100" and manifest["runtime"]["device"] == "cuda"
    assert manifest["metrics"]["latency_ms"] > 0 and "latency_ms" in out
    # the default cost method is measure only on the target's own GPU model (an H100 here), else the estimate
    on_h100 = get_target("gpu:h100").on_device()
    assert f"cost method:  {'measure' if on_h100 else 'analytical'}" in out
    assert (tmp_path / "b" / "model.so").stat().st_size > 0


def test_the_driver_s_gpu_names_map_to_the_device_table():
    from hwnas.targets.gpu.devices import device_named

    assert device_named("NVIDIA H200") == "h200"
    assert device_named("NVIDIA H100 80GB HBM3") == "h100"
    assert device_named("NVIDIA GeForce GTX 1080 Ti") == "1080ti"
    assert device_named("Tesla V100-SXM2-16GB") is None
