"""A MobileNetV2-style space: kernel, expansion and depth per stage, width, resolution.

The fixed part follows MobileNetV2: a 3x3 stride-2 conv to ``32 * width``
channels, an inverted residual with expansion 1 to ``16 * width`` channels,
and at the end a 1x1 conv to ``1280`` channels (``1280 * width`` when the
width is above 1), global average pooling and a linear classifier. Between
them, six searchable stages with MobileNetV2's channel/stride plan
(24 s2, 32 s2, 64 s2, 96 s1, 160 s2, 320 s1); the first block of a stage
carries its stride. Channels are ``round(c * width)`` to a multiple of 8
(never more than 10% below). Activations are ReLU6 (ONNX ``Clip``).

Genome: for each stage ``(kernel, expansion, depth)`` indices into
``(3, 5, 7)``, ``(3, 4, 6)``, ``(1, 2, 3, 4)``; then the width index and the
resolution index into the space's ``widths`` and ``resolutions``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from hwnas.arch.base import ArchSpace, positive_int_option
from hwnas.errors import InvalidConfigError

KERNELS: tuple[int, ...] = (3, 5, 7)
EXPANSIONS: tuple[int, ...] = (3, 4, 6)
DEPTHS: tuple[int, ...] = (1, 2, 3, 4)
#: ``(channels at width 1, stride)`` of the searchable stages
STAGES: tuple[tuple[int, int], ...] = ((24, 2), (32, 2), (64, 2), (96, 1), (160, 2), (320, 1))
FIRST_CONV_CHANNELS = 32
FIRST_BLOCK_CHANNELS = 16
LAST_CONV_CHANNELS = 1280
DEFAULT_RESOLUTIONS: tuple[int, ...] = (96, 128, 160)
DEFAULT_WIDTHS: tuple[float, ...] = (0.5, 0.75, 1.0)
#: total stride of the network: every resolution must be a multiple of it
TOTAL_STRIDE = 32
MAX_WIDTH = 4.0


@dataclass(frozen=True)
class MBV2Arch:
    """A decoded genome: ``(kernel, expansion, depth)`` per stage, width multiplier, resolution."""

    stages: tuple[tuple[int, int, int], ...]
    width: float
    resolution: int


def round_channels(value: float, divisor: int = 8) -> int:
    """``value`` rounded to the nearest multiple of ``divisor``, at least ``divisor``
    and never more than 10% below ``value`` (MobileNetV2's rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]


class _InvertedResidual(nn.Module):
    """1x1 expand (skipped at expansion 1) -> depthwise kxk -> 1x1 project, residual when shape kept."""

    def __init__(self, cin: int, cout: int, *, kernel: int, expansion: int, stride: int) -> None:
        super().__init__()
        hidden = cin * expansion
        parts: list[nn.Module] = []
        if expansion != 1:
            parts += [*_conv_bn(cin, hidden, 1), nn.ReLU6()]
        parts += [*_conv_bn(hidden, hidden, kernel, stride, groups=hidden), nn.ReLU6()]
        parts += _conv_bn(hidden, cout, 1)
        self.body = nn.Sequential(*parts)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return out + x if self.residual else out


class _MBV2Network(nn.Module):
    def __init__(
        self, stages: Sequence[tuple[int, int, int]], *, width: float, num_classes: int
    ) -> None:
        super().__init__()
        cin = round_channels(FIRST_CONV_CHANNELS * width)
        first_block = round_channels(FIRST_BLOCK_CHANNELS * width)
        blocks: list[nn.Module] = [
            nn.Sequential(*_conv_bn(3, cin, 3, 2), nn.ReLU6()),
            _InvertedResidual(cin, first_block, kernel=3, expansion=1, stride=1),
        ]
        cin = first_block
        for (channels, stride), (kernel, expansion, depth) in zip(STAGES, stages):
            cout = round_channels(channels * width)
            for i in range(depth):
                blocks.append(
                    _InvertedResidual(
                        cin, cout, kernel=kernel, expansion=expansion, stride=stride if i == 0 else 1
                    )
                )
                cin = cout
        last = round_channels(LAST_CONV_CHANNELS * max(1.0, width))
        blocks.append(nn.Sequential(*_conv_bn(cin, last, 1), nn.ReLU6()))
        self.features = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


def _choices(option: str, values: object) -> tuple[object, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise InvalidConfigError(f"mbv2: option {option} must be a list of values, got {values!r}")
    if not values:
        raise InvalidConfigError(f"mbv2: option {option} must not be empty")
    if len(set(values)) != len(values):
        raise InvalidConfigError(f"mbv2: option {option} has repeated values: {list(values)!r}")
    return tuple(values)


def _check_resolutions(values: object) -> tuple[int, ...]:
    checked: list[int] = []
    for r in _choices("resolutions", values):
        if isinstance(r, bool) or not isinstance(r, numbers.Integral) or r < TOTAL_STRIDE or r % TOTAL_STRIDE:
            raise InvalidConfigError(
                f"mbv2: every resolution must be an integer >= {TOTAL_STRIDE} and a multiple of "
                f"{TOTAL_STRIDE}, got {r!r}"
            )
        checked.append(int(r))
    return tuple(checked)


def _check_widths(values: object) -> tuple[float, ...]:
    checked: list[float] = []
    for w in _choices("widths", values):
        if isinstance(w, bool) or not isinstance(w, numbers.Real) or not math.isfinite(w) or not 0 < w <= MAX_WIDTH:
            raise InvalidConfigError(
                f"mbv2: every width multiplier must be a number in (0, {MAX_WIDTH:g}], got {w!r}"
            )
        checked.append(float(w))
    return tuple(checked)


class MBV2Space(ArchSpace):
    """MobileNetV2-style space: per stage kernel/expansion/depth, global width and resolution."""

    name = "mbv2"
    description = "MobileNetV2-style space: kernel, expansion, depth per stage (6), width, resolution"

    def __init__(
        self,
        *,
        num_classes: int = 10,
        resolutions: Sequence[int] = DEFAULT_RESOLUTIONS,
        widths: Sequence[float] = DEFAULT_WIDTHS,
    ) -> None:
        """Options: classifier outputs, input resolutions and width multipliers to choose from."""
        self._num_classes = positive_int_option(self.name, "num_classes", num_classes)
        self.resolutions = _check_resolutions(resolutions)
        self.widths = _check_widths(widths)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        per_stage = (len(KERNELS), len(EXPANSIONS), len(DEPTHS))
        return per_stage * len(STAGES) + (len(self.widths), len(self.resolutions))

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def gene_names(self) -> tuple[str, ...]:
        names: list[str] = []
        for i in range(1, len(STAGES) + 1):
            names += [f"stage{i}.kernel", f"stage{i}.expansion", f"stage{i}.depth"]
        return (*names, "width", "resolution")

    def decode(self, genome: Sequence[int]) -> MBV2Arch:
        """The values ``genome`` selects."""
        genes = self.validate(genome)
        stages = tuple(
            (KERNELS[genes[3 * i]], EXPANSIONS[genes[3 * i + 1]], DEPTHS[genes[3 * i + 2]])
            for i in range(len(STAGES))
        )
        return MBV2Arch(stages=stages, width=self.widths[genes[-2]], resolution=self.resolutions[genes[-1]])

    def input_shape(self, genome: Sequence[int]) -> tuple[int, int, int, int]:
        r = self.decode(genome).resolution
        return (1, 3, r, r)

    def describe(self, genome: Sequence[int]) -> str:
        arch = self.decode(genome)
        stages = " | ".join(f"k{k} e{e} d{d}" for k, e, d in arch.stages)
        return f"{stages} | width {arch.width:g} | {arch.resolution}x{arch.resolution}"

    def options(self) -> dict[str, object]:
        return {"num_classes": self._num_classes, "resolutions": list(self.resolutions), "widths": list(self.widths)}

    def supernet_keys(self, genome: Sequence[int]) -> list[str]:
        """Elastic kernel, expansion, depth and width (OFA): block ``j`` of stage ``s`` is one set of
        tensors whatever the genome; its kernel is the centre of the 7x7 one, its channels the first ones."""
        arch = self.decode(genome)
        conv_bn = lambda name: [f"{name}.conv", f"{name}.bn"]  # noqa: E731
        keys = [*conv_bn("stem"), *conv_bn("first.dw"), *conv_bn("first.project")]
        for s, (_, _, depth) in enumerate(arch.stages):
            for j in range(depth):
                keys += [*conv_bn(f"s{s}.b{j}.expand"), *conv_bn(f"s{s}.b{j}.dw"), *conv_bn(f"s{s}.b{j}.project")]
        return [*keys, *conv_bn("last"), "classifier"]

    def supernet_cover(self) -> list[tuple[int, ...]]:
        return [self.supernet_sandwich()[0]]

    def supernet_sandwich(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Largest: kernel 7, expansion 6, depth 4, the widest width and highest resolution; smallest: kernel
        3, expansion 3, depth 1, the narrowest width and lowest resolution."""
        w, r = self.widths, self.resolutions
        largest = (len(KERNELS) - 1, len(EXPANSIONS) - 1, len(DEPTHS) - 1) * len(STAGES) + (
            w.index(max(w)), r.index(max(r)))
        smallest = (0, 0, 0) * len(STAGES) + (w.index(min(w)), r.index(min(r)))
        return largest, smallest

    def _build(self, genome: tuple[int, ...]) -> nn.Module:
        arch = self.decode(genome)
        return _MBV2Network(arch.stages, width=arch.width, num_classes=self._num_classes)
