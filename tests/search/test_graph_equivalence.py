"""Candidates that export to one graph are one point (issue 22, point 1, the general route).

The structural key (:func:`hwnas.ir.graph.structural_key`) is checked on hand-built ONNX graphs (what
it ignores, what it must see), then against an independent oracle on NB201 networks: two networks
compute the same function when, with every weight set from its shape alone, they give the same
output. Last, a search on a space whose own canonical form knows nothing (as a plugin space) evaluates
one graph once and says so in the store.
"""

from __future__ import annotations

import hashlib
import itertools
import tempfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hwnas.arch import get_space
from hwnas.arch.nb201 import live_genome
from hwnas.ir.graph import structural_key
from hwnas.ir.lower import export_onnx
from hwnas.search.config import SearchConfig
from hwnas.search.driver import Search


def _conv_graph(*, w_seed=0, names=("x", "w", "c", "r", "y"), k=3, stride=1, swap_add=False,
                dead=False, identity=False, clip_max=6.0, reshape=(1, -1)):
    """x -> Conv(w) -> c; r = Relu(c); y = Reshape(Add(r, c) clipped, shape)."""
    x, w, c, r, y = names
    rng = np.random.default_rng(w_seed)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 3, k, k)).astype(np.float32), w),
             numpy_helper.from_array(np.array(reshape, dtype=np.int64), "shape"),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
             numpy_helper.from_array(np.array(clip_max, dtype=np.float32), "hi")]
    conv = helper.make_node("Conv", [x, w], [c], kernel_shape=[k, k], strides=[stride, stride], pads=[k // 2] * 4)
    relu = helper.make_node("Relu", [c], [r])
    add = helper.make_node("Add", [c, r] if swap_add else [r, c], ["s"])
    clip = helper.make_node("Clip", ["s", "lo", "hi"], ["t"])
    nodes = [conv, relu]
    if identity:
        nodes[1] = helper.make_node("Relu", ["c_id"], [r])
        nodes.insert(1, helper.make_node("Identity", [c], ["c_id"]))
    nodes += [add, clip, helper.make_node("Reshape", ["t", "shape"], [y])]
    if dead:
        nodes.append(helper.make_node("Sigmoid", [c], ["unused"]))
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info(y, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph)


def test_structural_key_ignores_weight_values_names_identity_dead_code_and_commutative_order():
    base = structural_key(_conv_graph())
    assert structural_key(_conv_graph(w_seed=1)) == base  # other weight values: one architecture
    assert structural_key(_conv_graph(names=("in", "W", "a", "b", "out"))) == base
    assert structural_key(_conv_graph(swap_add=True)) == base  # Add's inputs swapped
    assert structural_key(_conv_graph(dead=True)) == base  # a node on no path to the output
    assert structural_key(_conv_graph(identity=True)) == base
    # node order: the same nodes listed in another topological order
    m = _conv_graph(dead=True)
    nodes = list(m.graph.node)
    del m.graph.node[:]
    m.graph.node.extend([nodes[0], nodes[-1], *nodes[1:-1]])  # the dead Sigmoid right after the conv
    assert structural_key(m) == base


@pytest.mark.parametrize("change", [dict(k=5), dict(stride=2), dict(clip_max=3.0), dict(reshape=(-1, 1))])
def test_structural_key_sees_shapes_attributes_scalars_and_integer_constants(change):
    assert structural_key(_conv_graph(**change)) != structural_key(_conv_graph())


def _resize(scale):
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([1, 1, scale, scale], dtype=np.float32), "scales")])
    return structural_key(helper.make_model(graph))


def test_a_float_constant_that_sets_a_shape_counts_through_the_shape():
    assert _resize(2.0) != _resize(3.0)  # the scales are a float tensor, like a weight; the output is not


def _sum3(first, second):
    """y = (p + q) + r, the inner sum's operands ``first``, then the third one."""
    names = ["p", "q", "r"]
    third = next(n for n in names if n not in (first, second))
    graph = helper.make_graph([helper.make_node("Add", [first, second], ["s"]), helper.make_node("Add", ["s", third], ["y"])],
                              "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in names],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    return structural_key(helper.make_model(graph))


def test_structural_key_takes_a_chain_of_sums_in_any_bracketing_but_not_other_operands():
    assert _sum3("p", "q") == _sum3("p", "r") == _sum3("r", "q")
    # p + q + r is not p + p + r
    graph = helper.make_graph([helper.make_node("Add", ["p", "p"], ["s"]), helper.make_node("Add", ["s", "r"], ["y"])],
                              "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [2]) for n in "pqr"],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    assert structural_key(helper.make_model(graph)) != _sum3("p", "q")


def test_structural_key_tells_the_operands_of_a_non_commutative_op_apart():
    def sub(a, b):
        graph = helper.make_graph([helper.make_node("Sub", [a, b], ["y"])], "g",
                                  [helper.make_tensor_value_info("p", TensorProto.FLOAT, [2]),
                                   helper.make_tensor_value_info("q", TensorProto.FLOAT, [2])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
        return structural_key(helper.make_model(graph))

    assert sub("p", "q") != sub("q", "p")


# -- against an oracle on NB201 networks --------------------------------------------------------------

_SMALL = {"channels": 4, "cells_per_stage": 1}


def _fingerprint(space, genome) -> np.ndarray:
    """The network's output with every weight (and batch-norm statistic) drawn from a seed that is its
    shape: networks of one architecture give one output, others (almost surely) another."""
    net = space.build(genome)
    with torch.no_grad():
        for name, t in itertools.chain(net.named_parameters(), net.named_buffers()):
            if not t.dtype.is_floating_point:
                continue
            seed = int(hashlib.sha256(repr(tuple(t.shape)).encode()).hexdigest()[:8], 16)
            g = torch.Generator().manual_seed(seed + (1 if name.endswith("running_var") else 0))
            values = torch.rand(t.shape, generator=g)
            t.copy_(values + 0.5 if name.endswith("running_var") else values - 0.5)
        x = torch.rand(space.input_shape(genome), generator=torch.Generator().manual_seed(7))
        return net(x).numpy().ravel()


def _key(space, genome, folder, seed=0) -> str:
    path = export_onnx(space.build(genome, seed=seed), space.input_shape(genome), f"{folder}/m.onnx")
    return structural_key(onnx.load(str(path)))


def test_structural_key_merges_nb201_networks_exactly_when_they_compute_the_same_function():
    space = get_space("nb201", **_SMALL)
    rng = np.random.default_rng(0)
    genomes = {live_genome(space.sample(rng)) for _ in range(80)}
    # pairs that differ as genomes but not as functions: a skip edge makes node 1 the cell input, so an
    # op read from node 1 is the same op read from node 0 (the live genome does not know this)
    skip, c1, c3, pool = 1, 2, 3, 4
    crafted = [(skip, 0, c3, 0, 0, c1), (skip, c3, 0, 0, 0, c1),  # node2 = conv3(node1) vs conv3(node0)
               (skip, 0, 0, 0, pool, 0), (skip, 0, 0, pool, 0, 0),  # node3 = pool(node1) vs pool(node0)
               (skip, c1, c1, 0, 0, skip),
               # node1 = node2 = the cell input: node3 sums the same three ops, bracketed another way
               (skip, skip, 0, c1, pool, c3), (skip, skip, 0, c1, c3, pool)]
    genomes |= {live_genome(g) for g in crafted}
    genomes = sorted(genomes)
    with tempfile.TemporaryDirectory() as folder:
        keys = {g: _key(space, g, folder) for g in genomes}
        assert _key(space, genomes[0], folder, seed=1) == keys[genomes[0]]  # weights' values do not count
    prints = {g: _fingerprint(space, g) for g in genomes}
    merged = 0
    for a, b in itertools.combinations(genomes, 2):
        equal = bool(np.allclose(prints[a], prints[b], rtol=1e-4, atol=1e-6))
        assert (keys[a] == keys[b]) == equal, (a, b)
        merged += equal
    # distinct live genomes, one function: the crafted pairs at least (the live genome does not merge them)
    assert merged >= 3


# -- in a search ----------------------------------------------------------------------------------------

PLUGIN = str(Path(__file__).with_name("plugin_space.py"))
SPACE = "nb201-plugin-test"


def test_a_search_evaluates_one_exported_graph_once_and_the_store_says_so(tmp_path, monkeypatch):
    skip, c1, c3 = 1, 2, 3
    a = (c3, c1, 0, 0, 0, c1)  # node1 = conv3(x) is read by no edge: dead
    a_live = (0, c1, 0, 0, 0, c1)  # node2 = conv1(x), node3 = conv1(node2)
    b = (skip, 0, c3, 0, 0, c1)  # node1 = x, node2 = conv3(node1), node3 = conv1(node2)
    b_same = (skip, c3, 0, 0, 0, c1)  # node2 = conv3(x): node 1 is node 0
    b_plain = (0, c3, 0, 0, 0, c1)  # b without its skip edge
    d = (0, c3, 0, c1, 0, c1)  # node3 = conv1(x) + conv1(node2): another function
    opts = dict(targets=("cpu",), space=SPACE, plugins=(PLUGIN,), space_options=_SMALL, objectives=("latency_ms",),
                cost="analytical", workers=0, surrogate="none", budget=4)
    run = Search(SearchConfig(**opts), tmp_path / "graph")
    assert run.by_graph
    hw = run.joint.targets[0].hardware_space.default()
    X = [run.joint.join(g, [hw]) for g in (a, b, a_live, b_same, d, b_plain)]
    # the same graph with another hardware config is another point
    other = next(x for x in (X[1][:6] + [v] + X[1][7:] for v in range(run.joint.cardinalities[6])) if x != X[1])
    out = run.evaluate(X + [other])
    assert run.evaluated == 4  # a, b, d and b with the other config
    assert out[2] is out[0] and out[3] is out[1] and out[5] is out[1]
    assert len({id(p) for p in out}) == 4 and all(p.status == "ok" for p in out)
    assert out[6] is not out[1] and out[6].hws != out[1].hws
    notes = run.store.values(run.equivalent_namespace)
    assert sorted((tuple(n["genome"]), tuple(n["canonical"]), n["by"]) for n in notes) == sorted(
        [(a_live, a, "graph"), (b_same, b, "graph"), (b_plain, b, "graph")])
    assert sorted(run.point(k).key for k in run.aliases) == sorted([out[0].key, out[1].key, out[1].key])
    # one structural key per genome: b with the other config took b's (no second export)
    assert len(run.store.values(run.graph_namespace)) == 6
    # each point was compiled from the export its structural key was read from (nothing exported twice)
    rows = run.store.evaluations(Search.RUN_ID)
    assert len(rows) == 4 and all(r.timings.get("export_reused") == 1.0 for r in rows)
    # worker processes get the same points and the same aliases (the analytical latency rests on machine
    # peaks each run measures, so only the figures read from the module are compared)
    pool = Search(SearchConfig(**{**opts, "workers": 2}), tmp_path / "pool")
    pooled = pool.evaluate(X + [other])
    pool.close()
    fixed = ("macs", "peak_memory_kb", "params_kb")
    assert [(p.key, p.status, [p.metrics["cpu"][m] for m in fixed]) for p in pooled] == [
        (p.key, p.status, [p.metrics["cpu"][m] for m in fixed]) for p in out]
    assert pool.aliases == run.aliases
    assert all(r.timings.get("export_reused") == 1.0 for r in pool.store.evaluations(Search.RUN_ID))
    # a resumed run finds every point in the store, exports nothing, and evaluates nothing again
    import hwnas.ir.lower

    exports = []
    monkeypatch.setattr(hwnas.ir.lower, "export_onnx", lambda *a, **k: exports.append(a))
    again = Search(SearchConfig(**opts), tmp_path / "graph", resume=True)
    out2 = again.evaluate(X + [other])
    assert not exports and again.evaluated == 4 and again.from_store == 4
    assert [p.key for p in out2] == [p.key for p in out] and again.aliases == run.aliases

    # by genome alone, the equivalent genomes are evaluated, and the budget ends before d
    by_genome = Search(SearchConfig(**opts, equivalence="genome"), tmp_path / "genome")
    assert not by_genome.by_graph
    out = by_genome.evaluate(X)
    assert [p is not None for p in out] == [True, True, True, True, False, False]
    assert not by_genome.store.values(by_genome.equivalent_namespace)
