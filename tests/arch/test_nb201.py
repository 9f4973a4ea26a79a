"""NAS-Bench-201 space: networks, ONNX export, arch strings and the NB201 index order."""

from __future__ import annotations

import csv

import numpy as np
import onnx
import pytest
import torch

from hwnas.arch.nb201 import (
    EDGES,
    NUM_ARCHS,
    OPS,
    NB201Space,
    arch_str_to_genome,
    genome_to_arch_str,
    genome_to_index,
    index_to_genome,
)
from hwnas.errors import InvalidConfigError, InvalidGenomeError

SPACE = NB201Space()
_rng = np.random.default_rng(201)
GENOMES = [SPACE.sample(_rng) for _ in range(20)]

# two entries of the published table (nb201/accuracy.csv), usable without the data
INDEX_0 = "|avg_pool_3x3~0|+|nor_conv_1x1~0|skip_connect~1|+|nor_conv_1x1~0|skip_connect~1|skip_connect~2|"
INDEX_1 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def test_shape_of_the_space() -> None:
    assert SPACE.cardinalities == (5,) * 6
    assert SPACE.num_candidates == NUM_ARCHS == 15625
    assert SPACE.num_classes == 10
    assert SPACE.gene_names() == ("edge 1<-0", "edge 2<-0", "edge 2<-1", "edge 3<-0", "edge 3<-1", "edge 3<-2")
    assert SPACE.input_shape(GENOMES[0]) == (1, 3, 32, 32)


@pytest.mark.parametrize("i", range(len(GENOMES)))
def test_random_genome_builds_and_exports(i: int, tmp_path, onnx_check) -> None:
    onnx_check(SPACE, GENOMES[i], tmp_path, seed=i)


@pytest.mark.parametrize(
    "genome",
    [(0, 0, 0, 0, 0, 0), (3, 3, 3, 0, 0, 0), (1, 0, 0, 0, 0, 0)],
    ids=["all-none", "output-edges-none", "node3-unreachable"],
)
def test_zero_cell_output_builds_exports_and_ignores_input(genome, tmp_path, onnx_check, calibrate) -> None:
    onnx_check(SPACE, genome, tmp_path)
    model = SPACE.build(genome)
    calibrate(model, (1, 3, 32, 32), 0)
    with torch.no_grad():
        a = model(torch.randn(1, 3, 32, 32))
        b = model(torch.randn(1, 3, 32, 32))
    torch.testing.assert_close(a, b)


def test_output_depends_on_input_when_a_path_exists(calibrate) -> None:
    model = SPACE.build((3, 0, 3, 0, 0, 3))  # 0 -> 1 -> 2 -> 3, each a conv
    calibrate(model, (1, 3, 32, 32), 0)
    with torch.no_grad():
        a = model(torch.randn(1, 3, 32, 32))
        b = model(torch.randn(1, 3, 32, 32))
    assert not torch.allclose(a, b)


def test_structure_matches_nb201() -> None:
    model = SPACE.build((3,) * 6)  # every edge a 3x3 conv
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    # stem + 15 cells x 6 convs + 2 reductions x (2 convs + 1 shortcut conv)
    assert len(convs) == 1 + 15 * 6 + 2 * 3
    assert model.classifier.in_features == 64
    # no parameters at all on edges for a pooling/skip cell
    pooled = SPACE.build((4, 1, 4, 1, 4, 1))
    assert sum(p.numel() for p in pooled.parameters()) < sum(p.numel() for p in model.parameters()) / 5


def test_options_change_the_network() -> None:
    space = NB201Space(num_classes=7, channels=8, cells_per_stage=1)
    model = space.build((3,) * 6)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 7)
    assert model.classifier.in_features == 32
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == 1 + 3 * 6 + 2 * 3


@pytest.mark.parametrize("options", [{"channels": 0}, {"cells_per_stage": -1}, {"num_classes": 2.5}])
def test_bad_options(options) -> None:
    with pytest.raises(InvalidConfigError, match=next(iter(options))):
        NB201Space(**options)


def test_arch_string_of_known_genomes() -> None:
    assert genome_to_arch_str((0, 1, 2, 3, 4, 0)) == (
        "|none~0|+|skip_connect~0|nor_conv_1x1~1|+|nor_conv_3x3~0|avg_pool_3x3~1|none~2|"
    )
    assert SPACE.describe((4, 2, 1, 2, 1, 1)) == INDEX_0
    assert arch_str_to_genome(INDEX_1) == (3, 3, 4, 1, 3, 1)


def test_known_nb201_indices() -> None:
    assert genome_to_arch_str(index_to_genome(0)) == INDEX_0
    assert genome_to_arch_str(index_to_genome(1)) == INDEX_1
    assert genome_to_index(arch_str_to_genome(INDEX_1)) == 1


def test_index_is_a_bijection_without_data() -> None:
    genomes = [index_to_genome(i) for i in range(NUM_ARCHS)]
    assert len(set(genomes)) == NUM_ARCHS
    assert all(genome_to_index(g) == i for i, g in enumerate(genomes))
    # the benchmark order is not the lexicographic one
    assert genomes[:3] != [(0, 0, 0, 0, 0, 0), (0, 0, 0, 0, 0, 1), (0, 0, 0, 0, 0, 2)]


def test_round_trip_against_published_table(bench_file) -> None:
    path = bench_file("nb201/accuracy.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == NUM_ARCHS
    seen = set()
    for row in rows:
        index, arch = int(row["nb201_index"]), row["arch_str"]
        genome = arch_str_to_genome(arch)
        assert index_to_genome(index) == genome, f"index {index}"
        assert genome_to_index(genome) == index
        assert genome_to_arch_str(genome) == arch
        seen.add(index)
    assert seen == set(range(NUM_ARCHS))


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("|none~0|+|none~0|none~1|", "3 nodes"),
        ("none~0|+|none~0|none~1|+|none~0|none~1|none~2|", "node 1"),
        ("|none~0|+|none~0|+|none~0|none~1|none~2|", "2 incoming"),
        ("|none~0|+|none~0|none~1|+|none~0|none~2|none~1|", "op~1"),
        ("|none~0|+|none~0|none1|+|none~0|none~1|none~2|", "op~1"),
        ("|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "unknown operation 'conv'"),
        ("", "3 nodes"),
    ],
)
def test_malformed_arch_strings(text: str, problem: str) -> None:
    with pytest.raises(InvalidGenomeError, match=problem):
        arch_str_to_genome(text)


def test_arch_string_must_be_a_string() -> None:
    with pytest.raises(InvalidGenomeError, match="str"):
        arch_str_to_genome(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("index", [-1, NUM_ARCHS, 3.0, "7", True])
def test_bad_indices(index) -> None:
    with pytest.raises(InvalidGenomeError, match="index"):
        index_to_genome(index)


def test_index_functions_validate_genomes() -> None:
    with pytest.raises(InvalidGenomeError, match="6 genes"):
        genome_to_index((0, 1, 2))
    with pytest.raises(InvalidGenomeError, match=r"edge 3<-2.*0\.\.4, got 5"):
        genome_to_arch_str((0, 0, 0, 0, 0, 5))


def test_ops_and_edges_tables() -> None:
    assert OPS == ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


def test_imports_into_tvm(tmp_path, onnx_check, tvm_import) -> None:
    for i, genome in enumerate(GENOMES[:2] + [(0,) * 6]):
        path = onnx_check(SPACE, genome, tmp_path, seed=100 + i)
        mod = tvm_import(path)
        assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
        assert onnx.load(str(path)).graph.output[0].name == "output"


def test_live_genome_drops_edges_on_no_input_output_path():
    from hwnas.arch.nb201 import live_genome

    # node 3 fed only by a skip from the input: every other edge is dead
    assert live_genome((2, 3, 3, 1, 0, 0)) == (0, 0, 0, 1, 0, 0)
    # node 1 feeds nothing that reaches the output -> its input edge is dead, the rest lives
    assert live_genome((3, 2, 0, 1, 0, 4)) == (0, 2, 0, 1, 0, 4)
    # node 2 has no input (its edges are none), so its output edge is dead too
    assert live_genome((3, 0, 0, 1, 3, 4)) == (3, 0, 0, 1, 3, 0)
    # a cell whose output is unreachable is all none; a fully connected cell is unchanged
    assert live_genome((4, 3, 1, 0, 0, 0)) == (0,) * 6
    assert live_genome((3, 3, 3, 3, 3, 3)) == (3,) * 6
