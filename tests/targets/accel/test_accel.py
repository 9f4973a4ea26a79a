"""asic:/fpga: accelerator targets end to end: variants, host-side numerics, metrics, artifacts,
over-budget points in a real search, and the command line."""

from __future__ import annotations

import csv
import json
import re

import numpy as np
import onnxruntime as ort
import pytest
import torch

from hwnas.arch import get_space
from hwnas.data import data_dir
from hwnas.errors import InvalidConfigError
from hwnas.pipeline.evaluate import Candidate, evaluate
from hwnas.ir.lower import export_onnx
from hwnas.targets import get_target, target_names
from hwnas.ir.runtime import random_inputs, run_vm

NB201_GENOME = (3, 1, 2, 0, 3, 4)  # conv3x3, skip, conv1x1, none, conv3x3, avg_pool
needs_data = pytest.mark.skipif(not (data_dir() / "nb201" / "accuracy.csv").is_file(),
                                reason="published NB201 data not found (../shared/data or HWNAS_DATA)")


def ort_reference(onnx_path, arrays):
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return sess.run(None, dict(zip([i.name for i in sess.get_inputs()], arrays)))[0]


def small_net():
    torch.manual_seed(2)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 24, 1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(24, 10),
    ).eval()


@pytest.fixture(scope="module")
def eyeriss_eval(tmp_path_factory):
    """An nb201 network compiled for asic:eyeriss (Eyeriss' default sizes)."""
    space = get_space("nb201")
    folder = tmp_path_factory.mktemp("asic")
    return evaluate(Candidate.from_space(space, NB201_GENOME, {}), get_target("asic:eyeriss"), workdir=folder)


def test_registry_knows_asic_and_fpga_with_their_variants():
    assert {"asic", "fpga"} <= set(target_names())
    assert get_target("asic").templates == ("ws_systolic", "os_systolic", "row_stationary")
    assert get_target("asic:any").hardware_space.params["template"].cardinality == 3
    eyeriss = get_target("asic:eyeriss")
    assert eyeriss.templates == ("row_stationary",) and eyeriss.area_budget_mm2 == 4.0
    assert eyeriss.hardware_space.default()["pe_rows"] == 12
    assert get_target("asic:ws_systolic@2.5").area_budget_mm2 == 2.5
    assert get_target("asic:tpu@1.5mm2").area_budget_mm2 == 1.5
    assert get_target("fpga:os_systolic").board_info.name == "zcu102"
    assert get_target("fpga:eyeriss@ultra96").board_info.part == "XCZU3EG"
    for spec in ("asic", "fpga:any@ultra96"):
        assert get_target(spec).builtin_constraints() == ("resource_use<=1",)
    assert get_target("cpu").builtin_constraints() == ()


@pytest.mark.parametrize("spec, message", [
    ("asic:npu", "asic:npu: unknown accelerator template 'npu'; known: ws_systolic"),
    ("asic:eyeriss@-1", "area budget after '@' must be a positive number"),
    ("asic:eyeriss@big", "area budget after '@' must be a positive number"),
    ("fpga:ws_systolic@zu9", "unknown FPGA board 'zu9'; known: zcu102, ultra96"),
])
def test_bad_variants_get_one_clear_error(spec, message):
    with pytest.raises(InvalidConfigError, match=re.escape(message)):
        get_target(spec)


def test_host_module_matches_onnx_runtime_and_metrics_are_complete(eyeriss_eval):
    ev = eyeriss_eval
    arrays = list(random_inputs(ev.built.inputs, seed=4).values())
    out = run_vm(ev.built.executable, arrays)[0]
    np.testing.assert_allclose(out, ort_reference(ev.onnx_path, arrays), rtol=1e-4, atol=1e-4)
    m = ev.metrics
    assert set(m) == set(ev.target.metrics)
    assert all(m[k] > 0 for k in ("latency_ms", "energy_mj", "area_mm2", "resource_use", "params_kb", "macs"))
    # the area of Eyeriss' sizes fits the default 4 mm^2 budget
    assert m["resource_use"] == pytest.approx(m["area_mm2"] / 4.0) and m["resource_use"] < 1
    # the cost is a deterministic function of the compiled module
    assert ev.target.cost(ev.built, method="analytical") == pytest.approx(
        {k: v for k, v in m.items()})
    # latency: no faster than the 168 PEs at 200 MHz doing the MACs
    assert m["latency_ms"] >= m["macs"] / 168 / 200e3
    # 16-bit weights: params_kb is half the float32 bytes
    summary = ev.target.summary(ev.built)
    assert summary["macs"] == m["macs"]
    assert sum(summary["energy_pj"].values()) * 1e-9 == pytest.approx(m["energy_mj"])


def test_fpga_target_on_a_depthwise_net_matches_onnx_runtime_and_reports_over_budget(tmp_path):
    path = export_onnx(small_net(), (1, 3, 16, 16), tmp_path / "net.onnx")
    target = get_target("fpga:ws_systolic@ultra96")
    ok = evaluate(Candidate.from_onnx(path, {"pe_rows": 8, "pe_cols": 8}), target)
    arrays = list(random_inputs(ok.built.inputs, seed=1).values())
    np.testing.assert_allclose(run_vm(ok.built.executable, arrays)[0], ort_reference(path, arrays),
                               rtol=1e-4, atol=1e-4)
    assert 0 < ok.metrics["resource_use"] < 1 and "area_mm2" not in ok.metrics
    # 64 x 64 16-bit MACs need 4096 DSPs: over the XCZU3EG's 360, reported, not raised
    big = evaluate(Candidate.from_onnx(path, {"pe_rows": 64, "pe_cols": 64, "data_bits": 16}), target)
    assert big.metrics["resource_use"] == pytest.approx(4096 / 360)
    # an int8 array of the same size takes half the DSPs and fewer cycles are not promised, energy is lower
    small = evaluate(Candidate.from_onnx(path, {"pe_rows": 64, "pe_cols": 64, "data_bits": 8}), target)
    assert small.metrics["resource_use"] == pytest.approx(2048 / 360)
    assert small.metrics["energy_mj"] < big.metrics["energy_mj"]


def test_bundle_holds_arch_description_mapping_table_and_host_library(tmp_path, eyeriss_eval):
    import tvm
    from tvm import relax

    from hwnas.pipeline.artifacts import verify_bundle, write_bundle

    manifest = verify_bundle(write_bundle(eyeriss_eval, tmp_path / "bundle").parent)
    files = manifest["files"]
    assert {"library", "arch_json", "mapping_csv", "mapping_json", "onnx", "runner"} <= set(files)
    folder = tmp_path / "bundle"
    # one description of the architecture: JSON (which any YAML 1.2 reader, Timeloop's included, also reads)
    assert "arch_yaml" not in files and not (folder / "arch.yaml").exists()
    arch = json.loads((folder / "arch.json").read_text())
    system = arch["architecture"]["subtree"][0]
    assert system["attributes"]["dataflow"] == "row_stationary"
    table = json.loads((folder / "mapping.json").read_text())
    rows = list(csv.DictReader(open(folder / "mapping.csv")))
    assert [r["func"] for r in rows] == [r["func"] for r in table]
    convs = [r for r in rows if r["kind"] == "conv2d"]
    assert convs and all(r["rows"] and r["dram_order"] and float(r["overflow"]) <= 1 for r in convs)
    # the host library runs in a fresh VM and computes the network
    lib = tvm.runtime.load_module(str(folder / files["library"]["path"]))
    x = random_inputs(eyeriss_eval.built.inputs, seed=9)
    out = relax.VirtualMachine(lib, tvm.cpu())["main"](*[tvm.runtime.tensor(a) for a in x.values()]).numpy()
    np.testing.assert_allclose(out, ort_reference(folder / "model.onnx", list(x.values())), rtol=1e-4, atol=1e-4)


def test_over_budget_designs_are_infeasible_points_of_a_real_search(tmp_path):
    from hwnas.cli.report import write_report
    from hwnas.search.config import SearchConfig
    from hwnas.search.driver import Search
    from hwnas.search.objectives import is_feasible

    cfg = SearchConfig(targets=("asic:eyeriss@8",), space="nb201", formulation="random", budget=3, pop_size=3,
                       workers=0, seed=1, accuracy="proxy", accuracy_options={"kind": "synflow"},
                       objectives=("accuracy", "latency_ms"))
    search = Search(cfg, tmp_path / "run")
    assert [str(b) for _, b in search.checks] == ["resource_use@asic:eyeriss@8<=1"]
    front = search.run()
    points = search.all_points()
    assert len(points) == 3 and all(p.status == "ok" for p in points), [p.error for p in points]
    use = [p.metrics["asic:eyeriss@8"]["resource_use"] for p in points]
    assert any(u > 1 for u in use) and any(u <= 1 for u in use), use
    for p, u in zip(points, use):
        assert is_feasible(p, search.checks) == (u <= 1)
        assert (search.G(p)[0] > 0) == (u > 1)
    assert front and all(p.metrics["asic:eyeriss@8"]["resource_use"] <= 1 for p in front)
    files = write_report(tmp_path / "run", artifacts=0)
    assert files["html"].is_file()


def test_cli_lists_compiles_and_refuses_bad_specs(capsys, tmp_path):
    from hwnas.cli.commands import main

    assert main(["targets"]) == 0
    out = capsys.readouterr().out
    for text in ("asic:<variant>", "fpga:<variant>", "row_stationary", "ultra96", "glb_split", "resource_use"):
        assert text in out
    assert main(["compile", "--space", "nb201", "--genome", json.dumps(list(NB201_GENOME)), "--target",
                 "asic:os_systolic", "--hw", '{"data_bits": 8}', "--out", str(tmp_path / "b")]) == 0
    out = capsys.readouterr().out
    assert "area_mm2" in out and (tmp_path / "b" / "mapping.csv").is_file()
    assert main(["compile", "--space", "nb201", "--target", "fpga:ws_systolic@ultra96", "--hw",
                 '{"dram_gbps": 25.6}', "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("hwnas: error: fpga:ws_systolic@ultra96: dram_gbps must not exceed") and len(err) <= 2


@pytest.mark.slow
@needs_data
def test_cli_search_on_an_fpga_template_with_the_accuracy_table(capsys, tmp_path):
    from hwnas.cli.commands import main

    code = main(["search", "--space", "nb201", "--target", "fpga:row_stationary@ultra96", "--accuracy", "table",
                 "--objectives", "accuracy,latency_ms,energy_mj", "--formulation", "random", "--budget", "3",
                 "--workers", "0", "--artifacts", "1", "--out", str(tmp_path / "s")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "3 points evaluated" in out
    bundles = list((tmp_path / "s").glob("artifacts/*/mapping.csv"))
    assert len(bundles) <= 1 and (bundles or "0 on the Pareto front" in out)


def test_weight_bits_are_a_deployment_knob_with_measured_accuracy(tmp_path):
    """4-bit weights make the accelerator's weight bytes smaller and its energy lower, and deploy the
    network with its weights rounded to 4 bits (what the accuracy evaluator then measures)."""
    from torch import nn

    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.ir import lower
    from hwnas.targets import get_target

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    path = lower.export_onnx(net, (1, 3, 16, 16), tmp_path / "net.onnx")
    target = get_target("asic:eyeriss")
    m = {bits: evaluate(Candidate.from_onnx(path, {"weight_bits": bits}), target).metrics for bits in ("data", 4)}
    assert m[4]["params_kb"] == pytest.approx(m["data"]["params_kb"] / 4)  # eyeriss: 16-bit data
    assert m[4]["energy_mj"] < m["data"]["energy_mj"]
    assert target.deployment_key(target.hardware_space.validate({})) is None
    hw4 = target.hardware_space.validate({"weight_bits": 4})
    assert "weight_bits" in target.deployment_knobs and target.deployment_key(hw4)
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    run = target.deploy_network(net, (1, 3, 16, 16), x, hw4)
    ref = net(torch.from_numpy(x)).detach().numpy()
    got = run(x)
    assert got.shape == ref.shape and not np.array_equal(got, ref)
    assert np.abs(got - ref).max() < 0.2 * np.abs(ref).max()  # 4-bit weights: close, not equal
