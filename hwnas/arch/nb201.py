"""The NAS-Bench-201 cell search space.

A cell is a DAG of 4 nodes; each of its 6 edges ``j -> i`` (``j < i``) carries
one of 5 operations. A genome is the 6 operation indices in the edge order of
the NB201 architecture string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``, i.e.
edges 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.

The network (as benchmarked by NAS-Bench-201): a 3x3 conv + BN stem, three
stages of ``cells_per_stage`` cells with ``C``, ``2C`` and ``4C`` channels,
a residual reduction block (stride 2) between stages, then BN-ReLU, global
average pooling and a linear classifier. Input: 32x32 RGB.

The benchmark numbers the 15,625 cells in its own order ("NB201 index"):
the cells listed in lexicographic genome order (first edge most significant),
then shuffled by Python's ``random.Random(88).shuffle``. That order is
recomputed here, so no data file is needed to map indices.
"""

from __future__ import annotations

import functools
import numbers
import random
from collections.abc import Sequence

import torch
from torch import nn

from hwnas.arch.base import ArchSpace, positive_int_option
from hwnas.arch.supernet import choice_keys
from hwnas.errors import InvalidGenomeError

#: operation names, in gene-value order
OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
#: the cell's edges as ``(to_node, from_node)``, in gene order
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
#: number of distinct cells
NUM_ARCHS: int = len(OPS) ** len(EDGES)
#: seed of the shuffle that produced the NB201 index order
_INDEX_SHUFFLE_SEED = 88
_NUM_NODES = 4


class _ReLUConvBN(nn.Sequential):
    """ReLU, then a bias-free ``k x k`` convolution, then batch norm."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(),
            nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(cout),
        )


def _edge_op(op: str, channels: int) -> nn.Module:
    """The module of a non-``none`` edge operation (stride 1, channels kept)."""
    if op == "skip_connect":
        return nn.Identity()
    if op == "nor_conv_1x1":
        return _ReLUConvBN(channels, channels, 1, 1)
    if op == "nor_conv_3x3":
        return _ReLUConvBN(channels, channels, 3, 1)
    if op == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise InvalidGenomeError(f"nb201: no module for operation {op!r}")


class _Cell(nn.Module):
    """One NB201 cell: node ``i`` is the sum of its incoming edges, the output is node 3.

    ``none`` edges contribute nothing and are left out of the graph; a node
    whose incoming edges are all ``none`` is a zero tensor (``input * 0``), so
    the exported graph keeps its shape.
    """

    def __init__(self, channels: int, ops: Sequence[str]) -> None:
        super().__init__()
        self.edges = nn.ModuleDict()
        self._active: list[tuple[int, int, str]] = []
        for (to, src), op in zip(EDGES, ops):
            if op == "none":
                continue
            key = f"edge{to}{src}"
            self.edges[key] = _edge_op(op, channels)
            self._active.append((to, src, key))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for target in range(1, _NUM_NODES):
            total: torch.Tensor | None = None
            for to, src, key in self._active:
                if to != target:
                    continue
                out = self.edges[key](nodes[src])
                total = out if total is None else total + out
            nodes.append(x.mul(0.0) if total is None else total)
        return nodes[-1]


class _ResidualReduction(nn.Module):
    """The stride-2 residual block between stages (ResNet basic block, pre-activation convs)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = _ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = _ReLUConvBN(cout, cout, 3, 1)
        self.shortcut = nn.Sequential(
            nn.AvgPool2d(2, stride=2),
            nn.Conv2d(cin, cout, 1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_b(self.conv_a(x)) + self.shortcut(x)


class _NB201Network(nn.Module):
    """Stem, three stages of cells with reductions between them, head."""

    def __init__(self, ops: Sequence[str], *, channels: int, cells_per_stage: int, num_classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        layers: list[nn.Module] = []
        width = channels
        for stage in range(3):
            if stage > 0:
                layers.append(_ResidualReduction(width, 2 * width))
                width *= 2
            layers.extend(_Cell(width, ops) for _ in range(cells_per_stage))
        self.cells = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.BatchNorm2d(width), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.cells(self.stem(x)))
        return self.classifier(torch.flatten(self.pool(x), 1))


class NB201Space(ArchSpace):
    """NAS-Bench-201: 6 cell edges x 5 operations (15,625 networks), 32x32 input."""

    name = "nb201"
    description = "NAS-Bench-201 cell space: 6 edges x 5 ops, 15,625 networks, 32x32 input"

    def __init__(self, *, num_classes: int = 10, channels: int = 16, cells_per_stage: int = 5) -> None:
        """Options: classifier outputs, channels of the first stage, cells per stage."""
        self._num_classes = positive_int_option(self.name, "num_classes", num_classes)
        self.channels = positive_int_option(self.name, "channels", channels)
        self.cells_per_stage = positive_int_option(self.name, "cells_per_stage", cells_per_stage)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return (len(OPS),) * len(EDGES)

    @property
    def num_classes(self) -> int:
        return self._num_classes

    def gene_names(self) -> tuple[str, ...]:
        return tuple(f"edge {to}<-{src}" for to, src in EDGES)

    def input_shape(self, genome: Sequence[int]) -> tuple[int, int, int, int]:
        self.validate(genome)
        return (1, 3, 32, 32)

    def options(self) -> dict[str, object]:
        return {"num_classes": self._num_classes, "channels": self.channels, "cells_per_stage": self.cells_per_stage}

    def supernet_keys(self, genome: Sequence[int]) -> list[str]:
        """Every op on every edge (the one-shot supernet of NAS-Bench-201's weight-sharing baselines): an
        edge's conv ops have weights of their own in each cell; stem, reductions and head are shared."""
        def slot(name: str) -> int | None:
            parts = name.split(".")
            if len(parts) > 3 and parts[0] == "cells" and parts[2] == "edges":
                edge = parts[3].removeprefix("edge")
                return EDGES.index((int(edge[0]), int(edge[1])))
            return None

        return choice_keys(self, genome, slot, OPS)

    def supernet_cover(self) -> list[tuple[int, ...]]:
        return [(op,) * len(EDGES) for op in range(len(OPS))]

    def supernet_sandwich(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Largest: ``nor_conv_3x3`` on every edge; smallest: ``nor_conv_1x1`` (the cheapest op with weights)."""
        return (OPS.index("nor_conv_3x3"),) * len(EDGES), (OPS.index("nor_conv_1x1"),) * len(EDGES)

    def describe(self, genome: Sequence[int]) -> str:
        return _arch_str(self.validate(genome))

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The live genome (:func:`live_genome`): dead edges set to ``none``. It computes the same
        function with the dead work left out."""
        return live_genome(self.validate(genome))

    def _build(self, genome: tuple[int, ...]) -> nn.Module:
        return _NB201Network(
            [OPS[g] for g in genome],
            channels=self.channels,
            cells_per_stage=self.cells_per_stage,
            num_classes=self._num_classes,
        )


_SPACE = NB201Space()


def live_genome(genome: Sequence[int]) -> tuple[int, ...]:
    """``genome`` with every edge that is on no path from the cell's input to its output set to ``none``.

    Two cells with the same live genome compute the same function (a dead
    edge's output never reaches the cell output); NAS-Bench-201 trained them
    separately, so their table accuracies differ by training noise alone.
    """
    g = [int(v) for v in genome]
    while True:
        forward = {0}
        for i, (dst, src) in enumerate(EDGES):  # EDGES are in topological order of dst
            if g[i] and src in forward:
                forward.add(dst)
        backward = {3}
        for i, (dst, src) in reversed(list(enumerate(EDGES))):
            if g[i] and dst in backward:
                backward.add(src)
        dead = [i for i, (dst, src) in enumerate(EDGES) if g[i] and not (src in forward and dst in backward)]
        if not dead:
            return tuple(g)
        for i in dead:
            g[i] = 0


def _arch_str(genome: tuple[int, ...]) -> str:
    nodes: list[list[str]] = [[] for _ in range(_NUM_NODES - 1)]
    for (to, src), g in zip(EDGES, genome):
        nodes[to - 1].append(f"{OPS[g]}~{src}")
    return "+".join("|" + "|".join(node) + "|" for node in nodes)


def genome_to_arch_str(genome: Sequence[int]) -> str:
    """The NB201 architecture string of ``genome``, e.g. ``|nor_conv_3x3~0|+|...|``."""
    return _arch_str(_SPACE.validate(genome))


def arch_str_to_genome(arch_str: str) -> tuple[int, ...]:
    """The genome of an NB201 architecture string, or :class:`InvalidGenomeError`."""
    if not isinstance(arch_str, str):
        raise InvalidGenomeError(f"nb201: an architecture string is a str, got {type(arch_str).__name__}")
    nodes = arch_str.strip().split("+")
    if len(nodes) != _NUM_NODES - 1:
        raise InvalidGenomeError(
            f"nb201: an architecture string has {_NUM_NODES - 1} nodes joined by '+', "
            f"got {len(nodes)} in {arch_str!r}"
        )
    genome: list[int] = []
    for target, node in enumerate(nodes, start=1):
        if len(node) < 2 or node[0] != "|" or node[-1] != "|":
            raise InvalidGenomeError(
                f"nb201: node {target} must be written '|op~j|...|', got {node!r} in {arch_str!r}"
            )
        entries = node[1:-1].split("|")
        if len(entries) != target:
            raise InvalidGenomeError(
                f"nb201: node {target} must have {target} incoming edge(s), got {len(entries)} in {node!r}"
            )
        for src, entry in enumerate(entries):
            op, sep, origin = entry.partition("~")
            if not sep or origin != str(src):
                raise InvalidGenomeError(
                    f"nb201: edge {src} of node {target} must read 'op~{src}', got {entry!r}"
                )
            if op not in OPS:
                raise InvalidGenomeError(
                    f"nb201: unknown operation {op!r} in {arch_str!r}; known: {', '.join(OPS)}"
                )
            genome.append(OPS.index(op))
    return tuple(genome)


@functools.lru_cache(maxsize=1)
def _index_tables() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``(rank_of_index, index_of_rank)``; rank = lexicographic position of a genome."""
    rank_of_index = list(range(NUM_ARCHS))
    random.Random(_INDEX_SHUFFLE_SEED).shuffle(rank_of_index)
    index_of_rank = [0] * NUM_ARCHS
    for index, rank in enumerate(rank_of_index):
        index_of_rank[rank] = index
    return tuple(rank_of_index), tuple(index_of_rank)


def genome_to_index(genome: Sequence[int]) -> int:
    """The NB201 index (0..15624, the benchmark's numbering) of ``genome``."""
    rank = 0
    for g in _SPACE.validate(genome):
        rank = rank * len(OPS) + g
    return _index_tables()[1][rank]


def index_to_genome(index: int) -> tuple[int, ...]:
    """The genome of NB201 index ``index`` (0..15624)."""
    if isinstance(index, bool) or not isinstance(index, numbers.Integral):
        raise InvalidGenomeError(f"nb201: an index is an integer, got {index!r}")
    value = int(index)
    if not 0 <= value < NUM_ARCHS:
        raise InvalidGenomeError(f"nb201: index must be in 0..{NUM_ARCHS - 1}, got {value}")
    rank = _index_tables()[0][value]
    genes: list[int] = []
    for _ in EDGES:
        rank, g = divmod(rank, len(OPS))
        genes.append(g)
    return tuple(reversed(genes))
