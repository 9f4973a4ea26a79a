"""FBNet space (HW-NAS-Bench, CIFAR-100): networks, ONNX export, lookup-table keys."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from hwnas.arch.fbnet import LAYERS, OPS, FBNetSpace, layer_keys
from hwnas.errors import InvalidGenomeError

SPACE = FBNetSpace()
_rng = np.random.default_rng(22)
GENOMES = [SPACE.sample(_rng) for _ in range(20)]
SKIP = OPS.index("skip")


def test_shape_of_the_space() -> None:
    assert SPACE.cardinalities == (9,) * 22
    assert SPACE.num_classes == 100
    assert SPACE.input_shape(GENOMES[0]) == (1, 3, 32, 32)
    assert OPS == ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")


def test_layer_plan() -> None:
    assert len(LAYERS) == 22
    assert [layer.stage for layer in LAYERS] == [0] + [1] * 4 + [2] * 4 + [3] * 4 + [4] * 4 + [5] * 4 + [6]
    changing = [(i, layer.size, layer.cin, layer.cout, layer.stride) for i, layer in enumerate(LAYERS)
                if layer.cin != layer.cout or layer.stride != 1]
    assert changing == [
        (1, 32, 16, 24, 1), (5, 32, 24, 32, 2), (9, 16, 32, 64, 2),
        (13, 8, 64, 112, 1), (17, 8, 112, 184, 2), (21, 4, 184, 352, 1),
    ]


def test_layer_keys_of_a_known_genome() -> None:
    genome = [SKIP] * 22
    genome[0], genome[5], genome[21] = OPS.index("k5_e6"), OPS.index("k3_e1_g2"), OPS.index("k3_e3")
    keys = layer_keys(genome)
    assert len(keys) == 1 + 22 + 3
    assert keys[0] == "ConvNorm_H32_W32_Cin3_Cout16_kernel3_stride1_group1"
    assert keys[1] == "ConvBlock_H32_W32_Cin16_Cout16_exp6_kernel5_stride1_group1"
    assert keys[2] == "Skip_H32_W32_Cin16_Cout24_stride1"
    assert keys[6] == "ConvBlock_H32_W32_Cin24_Cout32_exp1_kernel3_stride2_group2"
    assert keys[7] == "Skip_H16_W16_Cin32_Cout32_stride1"
    assert keys[22] == "ConvBlock_H4_W4_Cin184_Cout352_exp3_kernel3_stride1_group1"
    assert keys[23:] == [
        "ConvNorm_H4_W4_Cin352_Cout1504_kernel1_stride1_group1",
        "AvgP_H4_W4_Cin1504_Cout1504_kernel4_stride1",
        "FC_Cin1504_Cout100",
    ]


@pytest.mark.parametrize("device", ["raspi4", "pixel3", "eyeriss", "fpga"])
def test_lookup_table_sums_equal_published_latency(device: str, bench_file) -> None:
    with bench_file("fbnet/hwnasbench_lut.json").open() as f:
        table = json.load(f)[f"{device}_latency"]
    with bench_file("fbnet/latency.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 5000
    for row in rows:
        genome = [int(g) for g in row["ops"].split()]
        total = sum(table[key] for key in layer_keys(genome))
        expected = float(row[f"lat_ms_{device}"])
        assert math.isclose(total, expected, rel_tol=1e-12, abs_tol=1e-12), (row["arch_id"], total, expected)


def test_every_key_of_every_choice_is_in_the_table(bench_file) -> None:
    with bench_file("fbnet/hwnasbench_lut.json").open() as f:
        table = json.load(f)["raspi4_latency"]
    for op in range(len(OPS)):
        missing = [k for k in layer_keys([op] * 22) if k not in table]
        assert not missing, (OPS[op], missing)


@pytest.mark.parametrize("i", range(len(GENOMES)))
def test_random_genome_builds_and_exports(i: int, tmp_path, onnx_check) -> None:
    onnx_check(SPACE, GENOMES[i], tmp_path, seed=i)


def test_skip_is_identity_only_where_the_shape_is_kept() -> None:
    model = SPACE.build([SKIP] * 22)
    identities = [i for i, m in enumerate(model.layers) if isinstance(m, torch.nn.Identity)]
    assert identities == [i for i in range(22) if i not in (1, 5, 9, 13, 17, 21)]
    convs = [m for m in model.layers.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.stride[0], c.kernel_size[0]) for c in convs] == [
        (16, 24, 1, 1), (24, 32, 2, 1), (32, 64, 2, 1), (64, 112, 1, 1), (112, 184, 2, 1), (184, 352, 1, 1),
    ]


def test_block_structure() -> None:
    genome = [SKIP] * 22
    genome[2] = OPS.index("k5_e1_g2")  # 24 -> 24, stride 1: residual
    genome[5] = OPS.index("k3_e6")  # 24 -> 32, stride 2: no residual
    model = SPACE.build(genome)
    grouped, expanded = model.layers[2], model.layers[5]
    g_convs = [m for m in grouped.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.groups) for c in g_convs] == [
        (24, 24, 1, 2), (24, 24, 5, 24), (24, 24, 1, 2),
    ]
    e_convs = [m for m in expanded.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size[0], c.stride[0], c.groups) for c in e_convs] == [
        (24, 144, 1, 1, 1), (144, 144, 3, 2, 144), (144, 32, 1, 1, 1),
    ]
    assert grouped.residual and not expanded.residual
    with torch.no_grad():  # a zeroed last BN makes a residual block the identity
        grouped.body[-1].weight.zero_()
        grouped.body[-1].bias.zero_()
        x = torch.randn(1, 24, 32, 32)
        torch.testing.assert_close(grouped(x), x)


def test_channel_shuffle_interleaves_groups() -> None:
    genome = [SKIP] * 22
    genome[2] = OPS.index("k3_e1_g2")
    shuffle = next(m for m in SPACE.build(genome).layers[2].body if type(m).__name__ == "_ChannelShuffle")
    x = torch.arange(24.0).reshape(1, 24, 1, 1).expand(1, 24, 32, 32)
    order = shuffle(x)[0, :, 0, 0].tolist()
    assert order[:4] == [0.0, 12.0, 1.0, 13.0]
    assert sorted(order) == list(map(float, range(24)))


def test_describe_groups_layers_by_stage() -> None:
    genome = [SKIP] * 22
    genome[0] = 0
    text = SPACE.describe(genome)
    assert "\n" not in text
    parts = text.split(" | ")
    assert [len(p.split()) for p in parts] == [1, 4, 4, 4, 4, 4, 1]
    assert parts[0] == "k3_e1" and parts[-1] == "skip"


def test_layer_keys_head_follows_classes() -> None:
    assert layer_keys(GENOMES[0], num_classes=10)[-1] == "FC_Cin1504_Cout10"
    assert layer_keys(GENOMES[0], num_classes=10)[:-1] == layer_keys(GENOMES[0])[:-1]


def test_layer_keys_validates() -> None:
    with pytest.raises(InvalidGenomeError, match="22 genes"):
        layer_keys([0] * 21)
    with pytest.raises(InvalidGenomeError, match=r"layer3.*0\.\.8, got 9"):
        layer_keys([0, 0, 0, 9] + [0] * 18)


def test_num_classes_option() -> None:
    model = FBNetSpace(num_classes=10).build(GENOMES[0])
    assert model.classifier.out_features == 10


def test_imports_into_tvm(tmp_path, onnx_check, tvm_import) -> None:
    genome = [SKIP] * 22
    genome[3] = OPS.index("k5_e1_g2")  # a channel shuffle
    for i, g in enumerate([GENOMES[0], GENOMES[1], tuple(genome)]):
        mod = tvm_import(onnx_check(SPACE, g, tmp_path, seed=200 + i))
        assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
