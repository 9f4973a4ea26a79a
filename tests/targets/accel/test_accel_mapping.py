"""MapAccelerator and the mapping model on real layers of nb201 and mbv2 networks.

Invariants are computed independently of the model: the MAC count is the
workload's; DRAM traffic is at least the compulsory bytes; tiles cover the
layer and fit the buffers; a bigger global buffer never needs more DRAM
traffic; hand-built mappings move exactly the words counted by hand.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from hwnas.targets.accel.space import TEMPLATES, AccelConfig, template
from hwnas.targets.accel.model import (
    DIMS,
    MAX_MAPPINGS,
    Layer,
    Mapping,
    candidate_mappings,
    evaluate_mapping,
    search_mapping,
)


def config(name: str, **over) -> AccelConfig:
    t = template(name)
    return dataclasses.replace(AccelConfig(template=t.name, glb_split="shared", **t.defaults()), **over)


@pytest.fixture(scope="module")
def fused(tmp_path_factory):
    """Fused modules of one nb201 cell network and one (small-resolution) mbv2 network."""
    from hwnas.arch import get_space
    from hwnas.ir import lower

    out = {}
    folder = tmp_path_factory.mktemp("accel-nets")
    for name, options, seed in (("nb201", {}, 3), ("mbv2", {"resolutions": (64,), "widths": (0.5,)}, 1)):
        space = get_space(name, **options)
        genome = space.sample(np.random.default_rng(seed))
        path = lower.export_onnx(space.build(genome), space.input_shape(genome), folder / f"{name}.onnx")
        out[name] = lower.fuse(lower.to_relax(lower.load_onnx(path)))
    return out


@pytest.fixture(scope="module")
def layers(fused):
    """(workload, Layer) of every distinct conv/dense kernel of both networks."""
    from hwnas.ir.workloads import extract

    seen, out = set(), []
    for mod in fused.values():
        for wl in extract(mod):
            layer = Layer.from_workload(wl)
            if layer is not None and layer not in seen:
                seen.add(layer)
                out.append((wl, layer))
    return out


def test_pass_attaches_one_record_per_kernel_and_leaves_the_tir_alone(fused):
    import tvm

    from hwnas.targets.accel.map_accelerator import MapAccelerator, read_mapping
    from hwnas.ir.lower import prim_funcs
    from hwnas.ir.workloads import extract

    mod = fused["nb201"]
    assert read_mapping(mod) == []
    after = MapAccelerator(config("row_stationary"))(mod)
    table = read_mapping(after)
    workloads = extract(mod)
    assert [r["func"] for r in table] == [w.func for w in workloads]
    for r, w in zip(table, workloads):
        assert r["calls"] == w.calls and r["macs"] == w.macs
        assert (r["mapping"] is None) == (w.macs == 0)
    before_funcs, after_funcs = prim_funcs(mod), prim_funcs(after)
    assert before_funcs.keys() == after_funcs.keys()
    for name, f in before_funcs.items():
        tvm.ir.assert_structural_equal(f, after_funcs[name])


def test_layers_cover_depthwise_pointwise_strided_and_dense(layers):
    kinds = {wl.kind for wl, _ in layers}
    assert {"conv2d", "depthwise_conv2d", "dense"} <= kinds
    assert any(layer.stride == 2 for _, layer in layers) and any(layer.r == 1 for _, layer in layers)


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_best_mappings_fit_cover_and_count_real_layers(layers, name):
    cfg = config(name)
    for wl, layer in layers:
        cost = search_mapping(layer, cfg)
        m = cost.mapping
        # MACs: the workload's, counted from its TIR block domain
        assert layer.macs == wl.macs and cost.accesses["mac"] == wl.macs
        # the factors of every level cover every dimension
        sp, rf, glb, dram = (m.factors(lv) for lv in ("spatial", "rf", "glb", "dram"))
        for d, extent in layer.dims.items():
            assert sp[d] * rf[d] * glb[d] * dram[d] >= extent, (wl.func, d)
        assert math.prod(f for _, f in m.rows) <= cfg.pe_rows and math.prod(f for _, f in m.cols) <= cfg.pe_cols
        # tiles fit the global buffer and the register file
        assert cost.fits, (name, wl.func, cost.buffer_bytes)
        assert cost.buffer_bytes["glb"] <= cfg.glb_bytes and cost.buffer_bytes["rf"] <= cfg.rf_bytes
        # DRAM traffic >= compulsory: every weight and output once, and for stride 1 every input element
        words = cost.accesses["dram"]
        floor = layer.g * layer.k * layer.c * layer.r * layer.s + layer.g * layer.n * layer.k * layer.p * layer.q
        if layer.stride == 1:
            floor += layer.g * layer.n * layer.c * layer.h * layer.w
        assert words >= floor + layer.extra, (name, wl.func)
        assert cost.dram_bytes >= floor * cfg.data_bytes
        # cycles: no faster than the PEs allow, and no faster than DRAM allows
        assert cost.compute_cycles >= layer.macs / cfg.pes
        assert cost.cycles >= cost.dram_bytes / cfg.bytes_per_cycle
        assert 0 < cost.utilization <= 1
        assert len(candidate_mappings(layer, cfg)) <= MAX_MAPPINGS


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_doubling_the_global_buffer_never_needs_more_dram_traffic(layers, name):
    for _, layer in layers[::3]:
        least = []
        for kb in (16, 64, 256):
            cfg = config(name, glb_kb=kb)
            fitting = [evaluate_mapping(layer, cfg, m) for m in candidate_mappings(layer, cfg)]
            fitting = [c.dram_bytes for c in fitting if c.fits]
            least.append(min(fitting) if fitting else math.inf)
        assert all(b <= a for a, b in zip(least, least[1:])), (name, layer, least)


def _mapping(dram: dict[str, int], order: tuple[str, ...], glb: dict[str, int] | None = None) -> Mapping:
    return Mapping(rows=(("C", 4),), cols=(("K", 4),), rf=(), glb=tuple((glb or {}).items()),
                   dram=tuple(dram.items()), dram_order=("G", "N") + order)


def test_hand_counted_dram_traffic_of_a_weight_stationary_layer():
    # 1x1 conv, 8 -> 8 channels, 4x4 output: W 64, I 128, O 128 words
    layer = Layer(g=1, n=1, k=8, c=8, p=4, q=4, r=1, s=1, h=4, w=4)
    cfg = config("ws_systolic", pe_rows=4, pe_cols=4, glb_kb=64)
    whole = evaluate_mapping(layer, cfg, _mapping({}, ("K", "C", "P", "Q"), {"K": 2, "C": 2, "P": 4, "Q": 4}))
    assert whole.accesses["dram"] == 64 + 128 + 128  # everything once
    # K and C split in 2 at DRAM, K outermost: each input tile is read once per K tile (twice), weights and
    # outputs once (an output tile stays in the GLB while C advances inside it)
    glb = {"P": 4, "Q": 4}
    k_outer = evaluate_mapping(layer, cfg, _mapping({"K": 2, "C": 2}, ("K", "C", "P", "Q"), glb))
    assert k_outer.accesses["dram"] == 64 + 2 * 128 + 128
    # C outermost: inputs are read once, but each output is written twice and read back once (partial sums)
    c_outer = evaluate_mapping(layer, cfg, _mapping({"K": 2, "C": 2}, ("C", "K", "P", "Q"), glb))
    assert c_outer.accesses["dram"] == 64 + 128 + 2 * 128 + 128
    # only C split: the output tile stays in the GLB across C, written once
    c_only = evaluate_mapping(layer, cfg, _mapping({"C": 2}, ("C", "K", "P", "Q"), {"K": 2, "P": 4, "Q": 4}))
    assert c_only.accesses["dram"] == 64 + 128 + 128
    psum = cfg.psum_bytes
    assert c_outer.dram_bytes == (64 + 128 + 128) * cfg.data_bytes + (128 + 128) * psum
    # the same layer, same mapping: 16-bit words cost more energy than 8-bit ones
    wide = evaluate_mapping(layer, dataclasses.replace(cfg, data_bits=16), c_outer.mapping)
    assert wide.energy_total_pj > c_outer.energy_total_pj
    # more DRAM bandwidth never slows a mapping down
    fast = evaluate_mapping(layer, dataclasses.replace(cfg, dram_gbps=25.6), c_outer.mapping)
    assert fast.cycles <= c_outer.cycles


def test_sliding_window_reads_each_input_row_once_along_output_rows():
    # 3x3 conv, stride 1, 16x16 output from a 16x16 input (padded): P split in 4 tiles at DRAM
    layer = Layer(g=1, n=1, k=4, c=4, p=16, q=16, r=3, s=3, h=16, w=16)
    cfg = config("ws_systolic", pe_rows=4, pe_cols=4, glb_kb=64)
    m = Mapping(rows=(("C", 4),), cols=(("K", 4),), rf=(), glb=(("P", 4), ("Q", 16), ("R", 3), ("S", 3)),
                dram=(("P", 4),), dram_order=("G", "N", "K", "C", "P", "Q"))
    cost = evaluate_mapping(layer, cfg, m)
    # first tile: rows 0..5 (6 rows, clipped to the input), then 4 new rows per step: 6 + 3 * 4 = 18 rows of 16
    inputs = 4 * (6 + 3 * 4) * 16
    assert cost.accesses["dram"] == 4 * 4 * 9 + inputs + 4 * 16 * 16


def test_a_buffer_too_small_for_any_tile_is_reported_as_overflow():
    layer = Layer(g=1, n=1, k=512, c=512, p=7, q=7, r=3, s=3, h=7, w=7)
    cfg = config("ws_systolic", pe_rows=64, pe_cols=64, glb_kb=16, glb_split="1:1:2", data_bits=16)
    cost = search_mapping(layer, cfg)
    assert not cost.fits and cost.overflow > 1


def test_dimension_names_are_the_accelerator_literatures():
    assert DIMS == ("G", "N", "K", "C", "P", "Q", "R", "S")
