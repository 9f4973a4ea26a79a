"""MobileNetV2-style space: genes, options, networks and ONNX export."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.arch.mbv2 import MBV2Space, round_channels
from hwnas.errors import InvalidConfigError, InvalidGenomeError

SPACE = MBV2Space()
_rng = np.random.default_rng(2)
GENOMES = [SPACE.sample(_rng) for _ in range(20)]


def _smallest(genome: tuple[int, ...]) -> tuple[int, ...]:
    """The same genome at the first resolution (96), to keep export cheap."""
    return (*genome[:-1], 0)


def _blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if type(m).__name__ == "_InvertedResidual"]


def test_shape_of_the_space() -> None:
    assert SPACE.cardinalities == (3, 3, 4) * 6 + (3, 3)
    assert SPACE.num_candidates == 36**6 * 9
    names = SPACE.gene_names()
    assert names[:3] == ("stage1.kernel", "stage1.expansion", "stage1.depth")
    assert names[-2:] == ("width", "resolution")


@pytest.mark.parametrize("i", range(len(GENOMES)))
def test_random_genome_builds_and_exports(i: int, tmp_path, onnx_check) -> None:
    onnx_check(SPACE, _smallest(GENOMES[i]), tmp_path, seed=i)


def test_forward_at_every_resolution() -> None:
    for r in range(3):
        genome = (*GENOMES[r][:-1], r)
        shape = SPACE.input_shape(genome)
        assert shape == (1, 3, (96, 128, 160)[r], (96, 128, 160)[r])
        with torch.no_grad():
            assert SPACE.build(genome)(torch.randn(*shape)).shape == (1, 10)


def test_decoded_genome_drives_the_network() -> None:
    genome = (0, 0, 0, 1, 1, 1, 2, 2, 2, 0, 2, 3, 1, 0, 0, 2, 1, 1, 0, 1)
    arch = SPACE.decode(genome)
    assert arch.stages == ((3, 3, 1), (5, 4, 2), (7, 6, 3), (3, 6, 4), (5, 3, 1), (7, 4, 2))
    assert (arch.width, arch.resolution) == (0.5, 128)
    model = SPACE.build(genome)
    blocks = _blocks(model)
    assert len(blocks) == 1 + 1 + 2 + 3 + 4 + 1 + 2
    depthwise = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.groups > 1]
    assert [c.kernel_size[0] for c in depthwise] == [3, 3, 5, 5, 7, 7, 7, 3, 3, 3, 3, 5, 7, 7]
    # widths 0.5: 32 -> 16, 16 -> 8, then 24, 32, 64, 96, 160, 320 -> 16, 16, 32, 48, 80, 160; last conv stays 1280
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[0].out_channels == 16 and convs[0].stride == (2, 2)
    outs = [b.body[-2].out_channels for b in blocks]
    assert outs == [8, 16, 16, 16, 32, 32, 32, 48, 48, 48, 48, 80, 160, 160]
    assert convs[-1].out_channels == 1280
    # first block of a stage: stage stride; expansion applied to its input channels
    assert blocks[2].body[0].out_channels == 16 * 4  # input channels x expansion
    assert not blocks[2].residual and blocks[3].residual


def test_total_stride_and_expansion() -> None:
    genome = (0, 2, 0) * 6 + (2, 0)  # expansion 6, depth 1, width 1, 96x96
    model = SPACE.build(genome)
    strides = [m.stride[0] for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert np.prod(strides) == 32
    hidden = [b.body[0].out_channels for b in _blocks(model)[1:]]
    assert hidden == [16 * 6, 24 * 6, 32 * 6, 64 * 6, 96 * 6, 160 * 6]
    with torch.no_grad():
        features = model.features(torch.randn(1, 3, 96, 96))
    assert features.shape == (1, 1280, 3, 3)


def test_wider_than_one_widens_the_last_conv() -> None:
    space = MBV2Space(widths=(1.5,))
    model = space.build((0, 0, 0) * 6 + (0, 0))
    assert model.classifier.in_features == 1920


@pytest.mark.parametrize(
    ("value", "expected"), [(12, 16), (24.0, 24), (8, 8), (10, 16), (4, 8), (120, 120), (1920, 1920), (36, 40)]
)
def test_round_channels(value: float, expected: int) -> None:
    assert round_channels(value) == expected


def test_options() -> None:
    space = MBV2Space(num_classes=5, resolutions=[64, 224], widths=[1.0])
    assert space.cardinalities[-2:] == (1, 2)
    genome = (0, 0, 0) * 6 + (0, 1)
    assert space.input_shape(genome) == (1, 3, 224, 224)
    assert space.describe(genome).endswith("width 1 | 224x224")
    with torch.no_grad():
        assert space.build((0, 0, 0) * 6 + (0, 0))(torch.randn(1, 3, 64, 64)).shape == (1, 5)
    with pytest.raises(InvalidGenomeError, match=r"width.*0\.\.0, got 1"):
        space.validate((0, 0, 0) * 6 + (1, 0))


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"resolutions": (96, 100)}, "multiple of 32"),
        ({"resolutions": (0,)}, ">= 32"),
        ({"resolutions": ()}, "empty"),
        ({"resolutions": 96}, "list"),
        ({"resolutions": (96, 96)}, "repeated"),
        ({"resolutions": (96.0,)}, "integer"),
        ({"widths": (0.0,)}, "width"),
        ({"widths": (float("nan"),)}, "width"),
        ({"widths": (75,)}, "width"),
        ({"widths": "0.5"}, "list"),
        ({"num_classes": 0}, "num_classes"),
    ],
)
def test_bad_options(options, problem: str) -> None:
    with pytest.raises(InvalidConfigError, match=problem):
        MBV2Space(**options)


def test_describe() -> None:
    genome = (2, 2, 3) + (0, 0, 0) * 5 + (1, 2)
    assert SPACE.describe(genome) == (
        "k7 e6 d4 | k3 e3 d1 | k3 e3 d1 | k3 e3 d1 | k3 e3 d1 | k3 e3 d1 | width 0.75 | 160x160"
    )


def test_imports_into_tvm(tmp_path, onnx_check, tvm_import) -> None:
    for i, genome in enumerate(GENOMES[:3]):
        mod = tvm_import(onnx_check(SPACE, _smallest(genome), tmp_path, seed=300 + i))
        assert "main" in [gv.name_hint for gv in mod.get_global_vars()]
