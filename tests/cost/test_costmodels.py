"""The CPU target's cheap cost methods (lookup table, roofline, predictor) on real compiled networks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwnas.arch import get_space
from hwnas.arch.nb201 import arch_str_to_genome
from hwnas.errors import InvalidConfigError
from hwnas.pipeline.evaluate import Candidate, compile_candidate
from hwnas.pipeline.predictor import collect, errors, sample_candidates, train
from hwnas.pipeline.store import ResultStore
from hwnas.cost import lut
from hwnas.ir.runtime import measure_kernel
from hwnas.targets import get_target
from hwnas.cost.cache import MemoryCache
from hwnas.cost.predictor import LatencyPredictor, network_features
from hwnas.cost.roofline import roofline_ms
from hwnas.ir.workloads import Workload, extract

CONV3 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|"
SKIPS = "|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|"
MIXED = "|nor_conv_3x3~0|+|skip_connect~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|avg_pool_3x3~2|"


@pytest.fixture(scope="module")
def cpu():
    t = get_target("cpu")
    t.set_measure_options(repeats=5, min_repeat_ms=5)
    return t


def build(target, arch: str, tmp_path, hw=None):
    space = get_space("nb201", cells_per_stage=1)  # the same kinds of kernel as 5 cells, a fifth of the compile
    hw = target.hardware_space.validate(hw or {})
    _, built, _ = compile_candidate(Candidate.from_space(space, arch_str_to_genome(arch), hw), target, hw,
                                    workdir=tmp_path, timings={})
    return built


class CountingMeasure:
    """The real per-kernel measurement, counting which kernel keys it was asked for."""

    def __init__(self):
        self.calls: list[str] = []

    def __call__(self, func, tgt):
        import tvm_ffi

        self.calls.append(format(int(tvm_ffi.structural_hash(func)) & (2**64 - 1), "016x"))
        return measure_kernel(func, tgt, repeats=5)


@pytest.mark.timing
def test_lookup_table_sums_kernels_measures_each_once_and_tracks_the_measurement(cpu, tmp_path):
    cache = MemoryCache()
    ns = cpu.cost_namespace({"num_threads": 2})
    counting = CountingMeasure()
    a = build(cpu, CONV3, tmp_path / "a")
    b = build(cpu, MIXED, tmp_path / "b")
    first = lut.lut_latency(a, cache=cache, namespace=ns, num_threads=2, measure_fn=counting)
    assert first.misses == len(extract(a.module)) and first.hits == 0
    second = lut.lut_latency(b, cache=cache, namespace=ns, num_threads=2, measure_fn=counting)
    # the mixed cell shares its stem, reductions, head and 3x3 convs with the all-conv cell
    assert second.hits > 0 and second.misses > 0
    again = lut.lut_latency(a, cache=cache, namespace=ns, num_threads=2, measure_fn=counting)
    assert again.misses == 0 and again.latency_ms == pytest.approx(first.latency_ms)
    assert len(counting.calls) == len(set(counting.calls)), "a kernel was measured twice"
    # the sum is the network: kernels measured alone add up to the whole module's time (1-10 % apart on a
    # quiet machine; the bound allows for a busy 2-core CI runner measuring the two at different moments)
    measured = cpu.cost(a, method="measure")["latency_ms"]
    assert 0.5 < first.latency_ms / measured < 2.0
    overhead = cache.get(ns, "overhead")
    assert 0 <= overhead["per_call_ms"] < 0.5 and overhead["per_inference_ms"] >= 0


def test_lookup_table_lives_in_the_store_across_processes(cpu, tmp_path):
    store = ResultStore(tmp_path / "results.db")
    built = build(cpu, MIXED, tmp_path / "m")
    cpu.use_cache(store)
    try:
        value = cpu.cost(built, method="lut")["latency_ms"]
        fresh = get_target("cpu")  # as a worker process would: a new target on the same store file
        fresh.use_cache(ResultStore(tmp_path / "results.db"))
        counting = CountingMeasure()
        ns = fresh.cost_namespace(built.hw)
        again = lut.lut_latency(built, cache=fresh.cache, namespace=ns, num_threads=2, measure_fn=counting)
        assert counting.calls == [] and again.latency_ms == pytest.approx(value)
    finally:
        cpu.use_cache(MemoryCache())


def test_roofline_formula():
    w = Workload(func="f", key="k", kind="conv2d", calls=3, macs=500, flops=1000, input_bytes=100, weight_bytes=50,
                 output_bytes=50, workspace_bytes=0, spatial=(1,), reduction=(1,), dtype="float32")
    # compute-bound: 1000 flops at 1 GFLOP/s = 1 us; 200 bytes at 1000 GB/s = 0.2 ns
    assert roofline_ms([w], gflops=1, gbps=1000) == pytest.approx(3 * 1e-3)
    # memory-bound: 200 bytes at 0.001 GB/s = 0.2 ms per call, plus overheads
    assert roofline_ms([w], gflops=1e6, gbps=1e-3, per_inference_ms=0.5, per_call_ms=0.1) == pytest.approx(
        0.5 + 3 * (0.2 + 0.1))


def test_analytical_is_deterministic_positive_and_orders_work(cpu, tmp_path):
    heavy = build(cpu, CONV3, tmp_path / "h")
    light = build(cpu, SKIPS, tmp_path / "l")
    a1 = cpu.cost(heavy, method="analytical")["latency_ms"]
    a2 = cpu.cost(heavy, method="analytical")["latency_ms"]
    b = cpu.cost(light, method="analytical")["latency_ms"]
    assert a1 == a2 > b > 0
    from hwnas.cost.roofline import PEAKS_KEY

    peaks = cpu.cache.get(cpu.cost_namespace(heavy.hw), PEAKS_KEY.format(n=heavy.hw["num_threads"]))
    assert peaks["gflops"] > 1 and peaks["gbps"] > 0.5


def test_cost_method_names_are_checked(cpu):
    assert cpu.cost_method(None) == "measure"
    with pytest.raises(InvalidConfigError, match="no cost method 'guess'; it has: measure, lut, analytical"):
        cpu.cost_method("guess")
    with pytest.raises(InvalidConfigError, match="needs a trained model: --cost predictor:MODEL.json"):
        cpu.cost_method("predictor")


@pytest.fixture(scope="module")
def samples(cpu):
    space = get_space("nb201")
    # the schedule knobs only, drawn as before the quantization knobs existed (float configs): ten samples
    # cannot teach a predictor those as well (with them, xgb's training error was 171 % on 2026-11-27); the
    # plumbing is what this file tests
    from types import SimpleNamespace

    from hwnas.hss import HardwareSpace
    from hwnas.hss.quant import KNOBS

    full = cpu.hardware_space
    schedule = SimpleNamespace(hardware_space=HardwareSpace(
        name="cpu-schedule", params={k: p for k, p in full.params.items() if k not in KNOBS},
        constraints=full.constraints))
    return collect(space, cpu, [(g, full.validate(hw)) for g, hw in sample_candidates(space, schedule, 10, seed=4)])


@pytest.mark.slow  # the ten measured samples take 80 s on 2 cores; tests/cost/test_ensemble.py covers the models
@pytest.mark.parametrize("kind", ["xgb", "mlp"])
def test_predictor_trains_saves_loads_and_prices_with_an_error_bar(cpu, samples, kind, tmp_path):
    assert len(samples) == 10 and all(s.latency_ms > 0 for s in samples)
    model = train(samples, kind=kind, seed=0, target=cpu, space_name="nb201")
    meta = model.metadata
    assert meta["target"] == "cpu" and meta["samples"] == 10 and meta["holdout"]["n"] == 2
    assert {"tvm", "torch"} <= set(meta["versions"]) and len(meta["data"]) == 10
    path = model.save(tmp_path / f"{kind}.json")
    loaded = LatencyPredictor.load(path)
    rows = [s.features for s in samples]
    mean, spread = model.predict(rows)
    mean2, spread2 = loaded.predict(rows)
    np.testing.assert_allclose(mean, mean2, rtol=1e-6)
    assert (mean > 0).all() and (spread >= 0).all() and spread.max() > 0
    # fitted on these samples: the training error is small against their spread
    lat = np.array([s.latency_ms for s in samples])
    assert errors(mean, lat)["mape_pct"] < 50
    built = build(cpu, CONV3, tmp_path / "c")
    values = cpu.cost(built, method=f"predictor:{path}")
    assert values["latency_ms"] > 0 and values["latency_std_ms"] >= 0


def test_predictor_errors_are_one_line(cpu, tmp_path):
    built = build(cpu, SKIPS, tmp_path / "s")
    with pytest.raises(InvalidConfigError, match="does not exist; train one"):
        cpu.cost(built, method=f"predictor:{tmp_path / 'none.json'}")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(InvalidConfigError, match="is not an hwnas latency predictor"):
        cpu.cost(built, method=f"predictor:{tmp_path / 'bad.json'}")
    # a model of this network's own features (no measured samples needed), trained for another target
    feats = network_features(extract(built.module), built.hw, cpu.hardware_space)
    model = LatencyPredictor("xgb", sorted(feats), metadata={"target": "mcu:stm32f746"})
    model.fit([feats] * 6, [1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
    path = model.save(tmp_path / "other.json")
    with pytest.raises(InvalidConfigError, match="trained for target mcu:stm32f746, not cpu"):
        cpu.cost(built, method=f"predictor:{path}")


def test_errors_metrics():
    e = errors([1.0, 2.15, 2.9], [1.0, 2.0, 3.0])
    assert e["kendall_tau"] == pytest.approx(1.0) and e["n"] == 3
    assert e["mape_pct"] == pytest.approx(100 * (0 + 0.075 + 0.1 / 3) / 3)
    assert e["within_10pct"] == pytest.approx(1.0)
    assert math.isclose(errors([3.0, 2.0, 1.0], [1.0, 2.0, 3.0])["spearman_rho"], -1.0)


def test_machine_peaks_measure_the_bandwidth_with_the_asked_threads_and_key_it_by_them(monkeypatch):
    import threading

    from hwnas.cost import roofline

    copiers: list[set[int]] = []
    real_copyto = np.copyto

    def recording_copyto(dst, src, *args, **kwargs):
        copiers[-1].add(threading.get_ident())
        return real_copyto(dst, src, *args, **kwargs)

    cache = MemoryCache()
    cache.put("ns", "peaks", {"gflops": 1.0, "gbps": 1.0})  # a value of the single-thread version: not reused
    peaks = {}
    for n in (1, 2):
        copiers.append(set())
        monkeypatch.setattr(np, "copyto", recording_copyto)
        peaks[n] = roofline.machine_peaks(cache=cache, namespace="ns", num_threads=n)
        monkeypatch.setattr(np, "copyto", real_copyto)
        assert len(copiers[-1]) == n  # the copy ran on n threads at once
        assert peaks[n]["gbps"] != 1.0 and peaks[n]["gbps"] > 0
        assert cache.get("ns", roofline.PEAKS_KEY.format(n=n)) == {**peaks[n], "threads": n}
    assert peaks[1]["gbps"] != peaks[2]["gbps"]  # two measurements, kept apart
    # a second call reads the cache
    assert roofline.machine_peaks(cache=cache, namespace="ns", num_threads=2) == peaks[2]
