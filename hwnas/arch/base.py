"""The contract every architecture search space fulfils.

A space maps a genome (a list of ints, gene ``i`` in ``range(cardinalities[i])``)
to a ``torch.nn.Module``. Spaces know about torch only.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

import numpy as np
import torch

from hwnas.errors import InvalidConfigError, InvalidGenomeError


class ArchSpace(abc.ABC):
    """An architecture search space: genomes of ints <-> torch modules."""

    #: registry name, e.g. ``"nb201"``
    name: str = ""
    #: one line for ``hwnas spaces``
    description: str = ""

    @property
    @abc.abstractmethod
    def cardinalities(self) -> tuple[int, ...]:
        """Number of choices of each gene."""

    @property
    def size(self) -> int:
        """Number of genes in a genome."""
        return len(self.cardinalities)

    @property
    def num_candidates(self) -> int:
        """Number of distinct genomes (may be huge)."""
        n = 1
        for c in self.cardinalities:
            n *= c
        return n

    @property
    @abc.abstractmethod
    def num_classes(self) -> int:
        """Output classes of every network of the space."""

    @abc.abstractmethod
    def input_shape(self, genome: Sequence[int]) -> tuple[int, int, int, int]:
        """NCHW input shape (batch 1) of the network of ``genome``."""

    @abc.abstractmethod
    def _build(self, genome: tuple[int, ...]) -> torch.nn.Module:
        """Build the network of an already validated genome."""

    @abc.abstractmethod
    def describe(self, genome: Sequence[int]) -> str:
        """A readable one-line description of the network of ``genome``."""

    def gene_names(self) -> tuple[str, ...]:
        """A short name per gene, for error messages and reports."""
        return tuple(f"gene{i}" for i in range(self.size))

    def validate(self, genome: Sequence[int]) -> tuple[int, ...]:
        """Return ``genome`` as a tuple of ints, or raise :class:`InvalidGenomeError`."""
        try:
            if isinstance(genome, (str, bytes)):
                raise TypeError("a string is not a genome")
            genome = list(genome)
            if any(isinstance(g, (str, bytes)) for g in genome):
                raise TypeError("genes are numbers, not strings")
            values = [int(g) for g in genome]
        except (TypeError, ValueError, OverflowError):
            raise InvalidGenomeError(
                f"{self.name}: a genome is a list of {self.size} integers, got {genome!r}"
            ) from None
        if any(isinstance(g, bool) or float(g) != int(g) for g in genome):
            raise InvalidGenomeError(f"{self.name}: genome genes must be integers, got {list(genome)!r}")
        if len(values) != self.size:
            raise InvalidGenomeError(
                f"{self.name}: genome must have {self.size} genes, got {len(values)}"
            )
        names = self.gene_names()
        for i, (g, c) in enumerate(zip(values, self.cardinalities)):
            if not 0 <= g < c:
                raise InvalidGenomeError(
                    f"{self.name}: gene {i} ({names[i]}) must be in 0..{c - 1}, got {g}"
                )
        return tuple(values)

    def canonical(self, genome: Sequence[int]) -> tuple[int, ...]:
        """The representative of the genomes that build the same function as ``genome`` (a search
        evaluates it in their place, once). The base class knows no such genomes: every genome is its
        own. A space whose genes can be dead (nb201: an edge on no input-output path) overrides this;
        the result must be a valid genome of the same function, and equal for equivalent genomes."""
        return self.validate(genome)

    def reference_genome(self) -> tuple[int, ...]:
        """A fixed network of the space (every gene at its middle choice, ``cardinality // 2``): a
        multi-target search divides each target's metric by this network's to aggregate over targets."""
        return tuple(c // 2 for c in self.cardinalities)

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        """A uniformly random genome."""
        return tuple(int(rng.integers(0, c)) for c in self.cardinalities)

    def options(self) -> dict[str, object]:
        """The options the space was built with (JSON-able): a supernet records them, and is refused by a
        space built with others."""
        return {}

    # -- weight sharing: what a space implements to get a supernet (:mod:`hwnas.arch.supernet`) ----------

    def supernet_keys(self, genome: Sequence[int]) -> list[str]:
        """One key per weight layer (``Conv2d``, ``BatchNorm2d``, ``Linear``) of ``build(genome)``, in
        ``modules()`` order: layers with one key, in any genome, share one weight tensor, the smaller ones
        taking a slice of it (the first channels, the centre of a kernel)."""
        raise self._no_supernet()

    def supernet_cover(self) -> list[tuple[int, ...]]:
        """Genomes whose networks together hold every key at its largest shape (the supernet's tensors)."""
        raise self._no_supernet()

    def supernet_sandwich(self) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """The largest and the smallest network (genomes), trained at every step of the sandwich rule."""
        raise self._no_supernet()

    def _no_supernet(self) -> InvalidConfigError:
        return InvalidConfigError(
            f"space {self.name} has no supernet: it must implement supernet_keys, supernet_cover and "
            f"supernet_sandwich (see hwnas.arch.supernet)")

    def build(self, genome: Sequence[int], *, seed: int = 0) -> torch.nn.Module:
        """The network of ``genome`` in eval mode, weights initialised from ``seed``."""
        g = self.validate(genome)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = self._build(g)
        return module.eval()


def positive_int_option(space: str, option: str, value: object) -> int:
    """``value`` as an int >= 1, or :class:`InvalidConfigError` naming ``space`` and ``option``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InvalidConfigError(f"{space}: option {option} must be an integer >= 1, got {value!r}")
    return int(value)
