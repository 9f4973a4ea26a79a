"""The FBNet search space of HW-NAS-Bench, CIFAR-100 setting.

22 searchable layers, each one of 9 blocks: ``k{kernel}_e{expansion}[_g2]``
inverted-residual blocks or ``skip``. The macro structure is fixed:

* stem: 3x3 conv (3 -> 16, stride 1) + BN + ReLU on a 32x32 input;
* 7 stages of ``(1, 4, 4, 4, 4, 4, 1)`` layers with ``(16, 24, 32, 64, 112,
  184, 352)`` output channels; the first layer of a stage has the stage's
  stride ``(1, 1, 2, 2, 1, 2, 1)`` and takes the previous stage's channels
  (the stem's 16 for stage 0), the other layers keep shape;
* head: 1x1 conv to 1504 channels + BN + ReLU, global average pooling (4x4),
  linear classifier.

A block is 1x1 expand (``groups``) -> BN-ReLU -> [channel shuffle when
``groups > 1``] -> ``k x k`` depthwise (stride) -> BN-ReLU -> 1x1 project
(``groups``) -> BN, plus the input when the stride is 1 and the channels are
kept. Expansion 1 keeps the expand conv (``cin -> cin``). ``skip`` is the
identity when the shape is kept, else a 1x1 conv (stride) + BN + ReLU.

:func:`layer_keys` names each layer as HW-NAS-Bench's lookup table does,
so a network's table cost is the sum over those keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.arch.base import ArchSpace, positive_int_option
from hwnas.arch.supernet import choice_keys

#: block choices per layer, in gene-value order
OPS: tuple[str, ...] = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
#: ``(kernel, expansion, groups)`` of each op; ``None`` for skip
_OP_SHAPES: tuple[tuple[int, int, int] | None, ...] = (
    (3, 1, 1), (3, 1, 2), (3, 3, 1), (3, 6, 1), (5, 1, 1), (5, 1, 2), (5, 3, 1), (5, 6, 1), None,
)

INPUT_SIZE = 32
STEM_CHANNELS = 16
STAGE_LAYERS: tuple[int, ...] = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS: tuple[int, ...] = (16, 24, 32, 64, 112, 184, 352)
STAGE_STRIDES: tuple[int, ...] = (1, 1, 2, 2, 1, 2, 1)
HEAD_CHANNELS = 1504


@dataclass(frozen=True)
class LayerShape:
    """The fixed shape of one searchable layer: input size, channels, stride."""

    stage: int
    size: int  # input height = width
    cin: int
    cout: int
    stride: int


def _layer_shapes() -> tuple[LayerShape, ...]:
    shapes: list[LayerShape] = []
    size, cin = INPUT_SIZE, STEM_CHANNELS
    for stage, (count, cout, stride) in enumerate(zip(STAGE_LAYERS, STAGE_CHANNELS, STAGE_STRIDES)):
        for i in range(count):
            s = stride if i == 0 else 1
            shapes.append(LayerShape(stage, size, cin, cout, s))
            size //= s
            cin = cout
    return tuple(shapes)


#: the 22 searchable layers
LAYERS: tuple[LayerShape, ...] = _layer_shapes()
#: spatial size entering the head
FINAL_SIZE: int = LAYERS[-1].size // LAYERS[-1].stride


def layer_keys(genome: Sequence[int], *, num_classes: int = 100) -> list[str]:
    """HW-NAS-Bench lookup-table keys of ``genome``: stem, the 22 layers, head conv, pool, FC.

    The table holds FC entries for 100 classes (CIFAR-100, the published
    latencies) and 10 classes.
    """
    genes = _SPACE.validate(genome)
    classes = positive_int_option("fbnet", "num_classes", num_classes)
    keys = [f"ConvNorm_H{INPUT_SIZE}_W{INPUT_SIZE}_Cin3_Cout{STEM_CHANNELS}_kernel3_stride1_group1"]
    for layer, g in zip(LAYERS, genes):
        h = layer.size
        shape = _OP_SHAPES[g]
        if shape is None:
            keys.append(f"Skip_H{h}_W{h}_Cin{layer.cin}_Cout{layer.cout}_stride{layer.stride}")
        else:
            kernel, expansion, groups = shape
            keys.append(
                f"ConvBlock_H{h}_W{h}_Cin{layer.cin}_Cout{layer.cout}_exp{expansion}"
                f"_kernel{kernel}_stride{layer.stride}_group{groups}"
            )
    f, c = FINAL_SIZE, STAGE_CHANNELS[-1]
    keys.append(f"ConvNorm_H{f}_W{f}_Cin{c}_Cout{HEAD_CHANNELS}_kernel1_stride1_group1")
    keys.append(f"AvgP_H{f}_W{f}_Cin{HEAD_CHANNELS}_Cout{HEAD_CHANNELS}_kernel{f}_stride1")
    keys.append(f"FC_Cin{HEAD_CHANNELS}_Cout{classes}")
    return keys


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class _ChannelShuffle(nn.Module):
    """Interleave the channels of ``groups`` groups (static shapes, batch left free)."""

    def __init__(self, channels: int, groups: int, size: int) -> None:
        super().__init__()
        self.channels, self.groups, self.size = channels, groups, size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c, g, s = self.channels, self.groups, self.size
        x = x.reshape(-1, g, c // g, s, s).transpose(1, 2)
        return x.reshape(-1, c, s, s)


class _Block(nn.Module):
    """Inverted residual block: grouped 1x1 expand, depthwise kxk, grouped 1x1 project."""

    def __init__(self, layer: LayerShape, kernel: int, expansion: int, groups: int) -> None:
        super().__init__()
        hidden = layer.cin * expansion
        parts: list[nn.Module] = [*_conv_bn(layer.cin, hidden, 1, groups=groups), nn.ReLU()]
        if groups > 1:
            parts.append(_ChannelShuffle(hidden, groups, layer.size))
        parts += [*_conv_bn(hidden, hidden, kernel, layer.stride, groups=hidden), nn.ReLU()]
        parts += _conv_bn(hidden, layer.cout, 1, groups=groups)
        self.body = nn.Sequential(*parts)
        self.residual = layer.stride == 1 and layer.cin == layer.cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


def _skip(layer: LayerShape) -> nn.Module:
    if layer.stride == 1 and layer.cin == layer.cout:
        return nn.Identity()
    return nn.Sequential(*_conv_bn(layer.cin, layer.cout, 1, layer.stride), nn.ReLU())


class _FBNetNetwork(nn.Module):
    def __init__(self, genome: Sequence[int], *, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn(3, STEM_CHANNELS, 3), nn.ReLU())
        layers: list[nn.Module] = []
        for layer, g in zip(LAYERS, genome):
            shape = _OP_SHAPES[g]
            layers.append(_skip(layer) if shape is None else _Block(layer, *shape))
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(*_conv_bn(STAGE_CHANNELS[-1], HEAD_CHANNELS, 1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.layers(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class FBNetSpace(ArchSpace):
    """HW-NAS-Bench's FBNet space (CIFAR-100 setting): 22 layers x 9 blocks, 32x32 input."""

    name = "fbnet"
    description = "FBNet space of HW-NAS-Bench (CIFAR-100 setting): 22 layers x 9 blocks, 32x32 input"

    def __init__(self, *, num_classes: int = 100) -> None:
        """Options: classifier outputs (the lookup table's head assumes 100)."""
        self._num_classes = positive_int_option(self.name, "num_classes", num_classes)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (len(OPS),) * len(LAYERS)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def gene_names(self) -> tuple[str, ...]:
        return tuple(f"layer{i}" for i in range(len(LAYERS)))

    def input_shape(self, genome: Sequence[int]) -> tuple[int, int, int, int]:
        self.validate(genome)
        return (1, 3, INPUT_SIZE, INPUT_SIZE)

    def options(self) -> dict[str, object]:
        return {"num_classes": self._num_classes}

    def supernet_keys(self, genome: Sequence[int]) -> list[str]:
        """The op choice per layer (FBNet's supernet): each of a layer's 9 blocks has weights of its own;
        stem, head and classifier are shared."""
        def slot(name: str) -> int | None:
            parts = name.split(".")
            return int(parts[1]) if parts[0] == "layers" else None

        return choice_keys(self, genome, slot, OPS)

    def supernet_cover(self) -> list[tuple[int, ...]]:
        return [(op,) * len(LAYERS) for op in range(len(OPS))]

    def supernet_sandwich(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Largest: ``k5_e6`` in every layer; smallest: ``k3_e1`` (the cheapest block; ``skip`` everywhere
        would train the stem and head only)."""
        return (OPS.index("k5_e6"),) * len(LAYERS), (OPS.index("k3_e1"),) * len(LAYERS)

    def describe(self, genome: Sequence[int]) -> str:
        genes = self.validate(genome)
        stages: list[list[str]] = [[] for _ in STAGE_LAYERS]
        for layer, g in zip(LAYERS, genes):
            stages[layer.stage].append(OPS[g])
        return " | ".join(" ".join(ops) for ops in stages)

    def _build(self, genome: tuple[int, ...]) -> nn.Module:
        return _FBNetNetwork(genome, num_classes=self._num_classes)


_SPACE = FBNetSpace()
