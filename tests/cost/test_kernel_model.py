"""The kernel-level latency predictor: a tiny space timed for real, the sum rule, the adaptive sampler."""

import json

import numpy as np
import pytest

from hwnas.arch import get_space
from hwnas.cost import kernel_model, lut
from hwnas.cost.cache import MemoryCache
from hwnas.errors import InvalidConfigError
from hwnas.ir.runtime import measure_kernel
from hwnas.ir.workloads import ConvShape, Workload
from hwnas.pipeline import kernel_set
from hwnas.pipeline.evaluate import Candidate, compile_candidate
from hwnas.targets import get_target

GENOME = (3, 1, 2, 3, 4, 0)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One small nb201 network (C=4, one cell per stage) compiled for the cpu, its kernels timed by the lut."""
    space, target = get_space("nb201", channels=4, cells_per_stage=1), get_target("cpu")
    hw = target.hardware_space.validate({"num_threads": 1})
    _, built, _ = compile_candidate(Candidate.from_space(space, GENOME, hw), target, hw,
                                    workdir=tmp_path_factory.mktemp("tiny"), timings={})
    cache = MemoryCache()
    # few repeats: the test checks the sum rule on whatever the kernels measured, not their precision
    table = lut.lut_latency(built, cache=cache, namespace=target.cost_namespace(hw), num_threads=1,
                            measure_fn=lambda func, tgt: measure_kernel(func, tgt, repeats=3, min_repeat_ms=1))
    return target, built, cache, table


@pytest.mark.slow  # ~15-35 s timing ~15 kernels alone; test_kernel_predictor_learns_generated_kernels covers
# fitting and the JSON round trip by default
def test_kernel_predictor_fits_the_lookup_table_and_round_trips(tiny, tmp_path):
    target, built, cache, table = tiny
    entries = kernel_set.measured_kernels(target, cache)
    assert len(entries) == len(table.rows) >= 8  # every lut entry carries the full record the model needs
    rows = kernel_model.training_rows(entries, target.hardware_space)
    kinds, feats, ms = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    model = kernel_model.KernelPredictor(sorted(feats[0])).fit(kinds, feats, ms)
    ns = target.cost_namespace(built.hw)
    model.overhead = {"1": lut.runtime_overhead(built.tvm_target, cache=cache, namespace=ns, num_threads=1)}
    path = model.save(tmp_path / "k.json")
    again = kernel_model.KernelPredictor.load(path)
    assert kernel_model.is_kernel_model(path) and json.loads(path.read_text())["format"] == kernel_model.FORMAT
    assert np.array_equal(again.predict_kernels(kinds, feats), model.predict_kernels(kinds, feats))
    # the sum rule on the same kernels: a model fitted on them reproduces the lookup table's network latency
    from hwnas.ir.workloads import extract

    predicted = again.predict_network(extract(built.module), built.hw, target.hardware_space)
    assert predicted == pytest.approx(table.latency_ms, rel=0.10)
    # and through the target's cost method, from the built module's workloads
    cost = target.cost(built, method=f"predictor:{path}")["latency_ms"]
    assert cost == pytest.approx(predicted, rel=1e-9)
    with pytest.raises(InvalidConfigError, match="no runtime overhead for num_threads=2"):
        again.predict_network(extract(built.module), {**built.hw, "num_threads": 2}, target.hardware_space)


def test_kernel_predictor_bad_files_are_one_line(tmp_path):
    corrupt = tmp_path / "c.json"
    corrupt.write_text('{"format": "hwnas-kernel-predictor/1", "models": {')
    with pytest.raises(InvalidConfigError, match="is corrupt"):
        kernel_model.KernelPredictor.load(corrupt)
    fewshot = tmp_path / "f.json"
    fewshot.write_text(json.dumps({"format": "hwnas-fewshot-latency", "space": "nb201"}))
    with pytest.raises(InvalidConfigError, match="is not an hwnas kernel predictor"):
        kernel_model.KernelPredictor.load(fewshot)
    with pytest.raises(InvalidConfigError, match="has no lookup table"):
        kernel_set.build(get_target("published:raspi4"), MemoryCache(), minutes=1)


def _conv(k: int, hw_pixels: int) -> Workload:
    conv = ConvShape(n=1, k=k, c=k, p=hw_pixels, q=hw_pixels, r=3, s=3, stride=1, groups=1, h=hw_pixels, w=hw_pixels)
    return Workload(func=f"fused_conv2d_{k}_{hw_pixels}", key=f"{k}-{hw_pixels}", kind="conv2d", calls=1,
                    macs=conv.macs, flops=2 * conv.macs, input_bytes=4 * k * hw_pixels ** 2,
                    weight_bytes=4 * k * k * 9, output_bytes=4 * k * hw_pixels ** 2, workspace_bytes=0,
                    spatial=(1, k, hw_pixels, hw_pixels), reduction=(k, 3, 3), dtype="float32", conv=conv)


def _pool(n: int) -> Workload:
    return Workload(func=f"fused_add_relu_{n}", key=f"p{n}", kind="elementwise", calls=1, macs=0, flops=n,
                    input_bytes=8 * n, weight_bytes=0, output_bytes=4 * n, workspace_bytes=0, spatial=(1, n),
                    reduction=(), dtype="float32")


def test_adaptive_sampler_measures_next_to_the_worst_predicted_kernels():
    hs = get_target("cpu").hardware_space
    hw = hs.validate({})
    measured = [_conv(8, 8), _conv(16, 16), _conv(64, 32), _pool(64), _pool(4096)]
    rows = [kernel_model.kernel_features(w.as_dict(), hw, hs) for w in measured]
    kinds = [w.kind for w in measured]
    names = sorted(rows[0])
    # held out: the big conv (index 2) predicted 80 % off, the rest within 2 %
    err = {"index": [0, 1, 2, 3, 4], "rel_error": [0.01, 0.02, 0.8, 0.01, 0.02]}
    pool = [{"workload": w, "hw": hw} for w in (_pool(128), _conv(8, 4), _conv(64, 16), _pool(2048), _conv(12, 12),
                                                _conv(48, 32))]
    chosen = kernel_set._nearest_to_worst(pool, kinds, rows, err, names, hs, 2)
    assert sorted(chosen) == [2, 5]  # the two big convs, not the small ones nor the elementwise kernels


def test_kernel_predictor_learns_generated_kernels(tmp_path):
    """Generated conv kernels whose time is a roofline of their MACs and bytes: learned to a few per cent,
    and the saved model predicts exactly what the fitted one does."""
    hs = get_target("cpu").hardware_space
    rng = np.random.default_rng(0)
    ws = [_conv(int(rng.choice([4, 8, 16, 32, 64])), int(rng.choice([4, 8, 16, 32]))) for _ in range(160)]
    hws = [hs.validate({"vector_width": int(rng.choice([1, 4, 8])), "tile_oc": 16}) for _ in ws]
    ms = [max(w.macs / (2e6 * h["vector_width"]), w.bytes_moved / 4e6) + 0.002 for w, h in zip(ws, hws)]
    rows = [kernel_model.kernel_features(w.as_dict(), h, hs) for w, h in zip(ws, hws)]
    names = sorted(rows[0])
    err = kernel_model.heldout_errors(["conv2d"] * len(ws), rows, ms, feature_names=names)
    assert err["mape_pct"] < 10 and err["n"] == 32
    model = kernel_model.KernelPredictor(names).fit(["conv2d"] * len(ws), rows, ms)
    path = model.save(tmp_path / "k.json")
    again = kernel_model.KernelPredictor.load(path)
    assert np.array_equal(again.predict_kernels(["conv2d"] * 5, rows[:5]), model.predict_kernels(["conv2d"] * 5,
                                                                                                   rows[:5]))


def _expanded(workloads, *, weights: bool = True) -> list:
    """Each kernel call's record (not its function name or hash): what the sum rule adds up."""
    out = []
    for w in workloads:
        d = w.as_dict()
        calls = d.pop("calls")
        for k in ("func", "key") + (() if weights else ("weight_bytes",)):
            d.pop(k)
        out += [json.dumps(d, sort_keys=True, default=str)] * calls
    return sorted(out)


@pytest.mark.parametrize("knobs", [
    {"layout": "NCHWc", "pack": 8, "conv_algo": "winograd"},  # weights' layout and Winograd transform folded
    {"layout": "NCHWc", "pack": 4, "weight_bits": 4, "activation_bits": 8},  # calibrated ranges, packed weights
])
def test_shape_only_lowering_gives_the_kernels_of_the_compile_path(knobs, tmp_path):
    """The kernel predictor's lowering computes no value (no constant folded for real, no calibration) and
    still finds the compile path's kernels: the same records, call for call."""
    from hwnas.ir.workloads import extract
    from hwnas.passes.quantize import QuantizeModule
    from hwnas.passes.shape_only import FoldConstantShapes, shape_only
    from hwnas.pipeline.evaluate import schedule_candidate

    space, target = get_space("nb201", channels=8, cells_per_stage=1), get_target("cpu")
    hw = target.hardware_space.validate({**knobs, "num_threads": 1})
    passes = shape_only(target.graph_passes(hw))
    assert not any(getattr(getattr(p, "info", None), "name", "") == "FoldConstant" for p in passes)
    assert any(isinstance(p, FoldConstantShapes) for p in passes)
    assert all(p.calibrated is False for p in passes if isinstance(p, QuantizeModule))
    cand = Candidate.from_space(space, GENOME, hw)
    _, full, _ = schedule_candidate(cand, target, hw, workdir=tmp_path / "full", timings={})
    _, fast, _ = schedule_candidate(cand, target, hw, workdir=tmp_path / "fast", timings={}, shape_only=True)
    fast, full = extract(fast), extract(full)
    if "activation_bits" not in knobs:
        assert _expanded(fast) == _expanded(full)
    else:
        # quantized: a layer whose calibrated input scale is tiny adds its bias in int64 rather than int32
        # (quantize.py), so one small constant per such layer may differ in width; everything else is equal
        assert _expanded(fast, weights=False) == _expanded(full, weights=False)
        weight_bytes = [sum(w.calls * w.weight_bytes for w in ws) for ws in (fast, full)]
        assert weight_bytes[0] == pytest.approx(weight_bytes[1], rel=0.01)
    assert any(w.kind == "conv2d" for w in fast)


def test_traffic_term_is_fitted_on_whole_networks_and_saved(tmp_path):
    """Networks that take more than their kernels' sum by a weight and an activation traffic: both
    coefficients recovered, kept by the JSON round trip, and added by predict_network."""
    hs = get_target("cpu").hardware_space
    hw = hs.validate({"num_threads": 2})
    rng = np.random.default_rng(1)
    ws = [_conv(int(rng.choice([4, 8, 16, 32, 64])), int(rng.choice([4, 8, 16, 32]))) for _ in range(40)]
    rows = [kernel_model.kernel_features(w.as_dict(), hw, hs) for w in ws]
    ms = [w.macs / 2e8 + 0.002 for w in ws]
    model = kernel_model.KernelPredictor(sorted(rows[0])).fit(["conv2d"] * len(ws), rows, ms)
    model.overhead = {"2": {"per_inference_ms": 0.01, "per_call_ms": 0.001}}
    nets = []
    for i in range(8):
        records = [w.as_dict() for w in rng.choice(ws, size=int(rng.integers(2, 8)), replace=False)]
        weights_mb, acts_mb = kernel_model.traffic_mb(records)
        nets.append({"records": records, "hw": hw,
                     "ms": model.predict_records(records, hw, hs) + 0.3 * weights_mb + 0.05 * acts_mb})
    report = model.fit_traffic(nets, hs)
    assert model.traffic["2"]["ms_per_mb"] == pytest.approx([0.3, 0.05], rel=1e-6)
    assert report["2"]["networks"] == 8 and report["2"]["fitted_within_10pct"] == 1.0
    assert report["2"]["sum_rule_within_10pct"] < 1.0  # the traffic is large enough to matter here
    again = kernel_model.KernelPredictor.load(model.save(tmp_path / "k.json"))
    net = nets[0]
    assert again.predict_records(net["records"], hw, hs) == pytest.approx(net["ms"], rel=1e-9)
    assert again.predict_records(net["records"], hw, hs, traffic=False) < net["ms"]
    # a thread count with fewer than 4 networks keeps the plain sum rule
    assert "1" not in model.traffic
    bad = json.loads((tmp_path / "k.json").read_text())
    bad["traffic"] = {"2": {"ms_per_mb": [0.3], "networks": 8}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InvalidConfigError, match="is corrupt"):
        kernel_model.KernelPredictor.load(tmp_path / "bad.json")
