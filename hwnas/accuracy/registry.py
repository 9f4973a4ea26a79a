"""The accuracy evaluators' contract and registry, and the checks of their options.

    get_accuracy("table:cifar100").evaluate(space, genome) -> 73.5

Every evaluator is deterministic for fixed settings on one machine (the
``train`` evaluator when its training ends by ``epochs`` or ``max_steps``
rather than by ``time_budget_s``), and :meth:`AccuracyEvaluator.settings`
lists everything that changes its results, so a run can refuse to resume
with different ones.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import math
import numbers
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from hwnas.arch import ArchSpace
from hwnas.errors import InvalidConfigError, RunError
from hwnas.util import keyword_options

__all__ = [
    "AccuracyEvaluator",
    "AccuracyResult",
    "Deploy",
    "accuracy_names",
    "choice_option",
    "fraction_option",
    "get_accuracy",
    "int_option",
    "positive_float_option",
    "register_accuracy",
    "threads_option",
    "torch_threads",
]


@dataclasses.dataclass(frozen=True)
class AccuracyResult:
    """One evaluation: the value, the seconds it took and evaluator-specific details."""

    #: top-1 % (or a proxy score when the evaluator's ``is_percentage`` is False)
    accuracy: float
    #: wall-clock seconds of the whole evaluation
    seconds: float
    #: JSON-able facts about the evaluation (steps trained, why training stopped, ...)
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


#: a target's deployment of a trained network: (model, input shape, calibration inputs) -> predict
Deploy = Callable[[nn.Module, Sequence[int], np.ndarray], Callable[[np.ndarray], np.ndarray]]


class AccuracyEvaluator(abc.ABC):
    """Gives a network of a space its ``accuracy``: top-1 % or, for a proxy, a score."""

    #: registry name, e.g. ``"table"``
    name: ClassVar[str] = ""
    #: one line for listings
    description: ClassVar[str] = ""
    #: True when the value is a top-1 percentage; False for a score where larger is better
    is_percentage: ClassVar[bool] = True
    #: the option that the ``name:value`` form of a spec sets (``"table:cifar100"``)
    spec_option: ClassVar[str | None] = None

    #: True when the evaluator measures the network it trained, so that it can measure the network a
    #: target deploys instead (``deploy``, see :meth:`evaluate_detailed`); False for tables and proxies
    uses_deployment: ClassVar[bool] = False

    def evaluate(self, space: ArchSpace, genome: Sequence[int], *, deploy: Deploy | None = None) -> float:
        """The accuracy of the network of ``genome`` in ``space``."""
        return self.evaluate_detailed(space, genome, deploy=deploy).accuracy

    def evaluate_detailed(
        self, space: ArchSpace, genome: Sequence[int], *, deploy: Deploy | None = None
    ) -> AccuracyResult:
        """The accuracy with the seconds it took and the evaluator's details.

        ``deploy(model, input_shape, calibration)`` (a target's
        :meth:`~hwnas.targets.Target.deploy_network`) turns the trained torch
        network into the function the device computes (e.g. int8); an
        evaluator with :attr:`uses_deployment` measures that function instead
        of the float network; the others ignore it.
        """
        start = time.perf_counter()
        genome = space.validate(genome)
        if deploy is not None and self.uses_deployment:
            value, details = self._evaluate(space, genome, deploy=deploy)
        else:
            value, details = self._evaluate(space, genome)
        value = float(value)
        if not math.isfinite(value):
            raise RunError(f"accuracy evaluator {self.name} gave a non-finite value for {list(genome)}")
        return AccuracyResult(accuracy=value, seconds=time.perf_counter() - start, details=details)

    @classmethod
    def check_space(cls, space: ArchSpace) -> None:
        """Raise :class:`InvalidConfigError` if this evaluator cannot score networks of ``space`` at all.

        Called before a search starts, so that a mismatch is one error line, not every point failing;
        a class method, so that it is checked before the evaluator reads any data (``get_accuracy``'s
        ``for_space``).
        """

    def check(self, space: ArchSpace) -> None:
        """Raise :class:`InvalidConfigError` if this evaluator, as built, cannot score ``space`` (e.g. a
        supernet trained for another space); called by ``get_accuracy(..., for_space=space)``."""

    @abc.abstractmethod
    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        """The value and details for an already validated genome."""

    @abc.abstractmethod
    def settings(self) -> dict[str, Any]:
        """JSON-able settings: everything that changes this evaluator's results."""


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, type[AccuracyEvaluator]] = {}


def register_accuracy(cls: type[AccuracyEvaluator]) -> type[AccuracyEvaluator]:
    """Register an evaluator class under its ``name``; a name is registered once."""
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not name or ":" in name:
        raise InvalidConfigError(f"accuracy evaluator class {cls.__name__} has no valid name: {name!r}")
    if name in _REGISTRY:
        raise InvalidConfigError(
            f"accuracy evaluator {name!r} is already registered ({_REGISTRY[name].__name__})"
        )
    _REGISTRY[name] = cls
    return cls


def accuracy_names() -> list[str]:
    """Names of the registered accuracy evaluators, sorted."""
    return sorted(_REGISTRY)


def get_accuracy(spec: str, *, for_space: ArchSpace | None = None, **options: Any) -> AccuracyEvaluator:
    """The evaluator named by ``spec``, built with ``options``.

    With ``for_space``, the evaluator's :meth:`~AccuracyEvaluator.check_space` runs first, before it is
    built (and reads its data): a space it cannot score is the error, not a data file it would not need.

    ``spec`` is a registered name (``"train"``) or ``name:value``, which sets
    the evaluator's main option (``"table:cifar100"`` is ``dataset="cifar100"``,
    ``"proxy:synflow"`` is ``kind="synflow"``). Unknown names and options are
    an :class:`InvalidConfigError` listing the known ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise InvalidConfigError(
            f"an accuracy evaluator is named by a string, got {spec!r}; known: {', '.join(accuracy_names())}"
        )
    name, sep, value = spec.strip().partition(":")
    cls = _REGISTRY.get(name)
    if cls is None:
        raise InvalidConfigError(
            f"unknown accuracy evaluator {name!r}; known: {', '.join(accuracy_names())}"
        )
    accepted = keyword_options(cls)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise InvalidConfigError(
            f"accuracy evaluator {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"options: {', '.join(accepted) or '(none)'}"
        )
    if sep:
        if cls.spec_option is None:
            raise InvalidConfigError(f"accuracy evaluator {name!r} takes no ':value' in its name, got {spec!r}")
        if cls.spec_option in options:
            raise InvalidConfigError(
                f"accuracy evaluator {spec!r} sets {cls.spec_option} twice (in the name and as an option)"
            )
        options[cls.spec_option] = value
    if for_space is not None:
        cls.check_space(for_space)
    evaluator = cls(**options)
    if for_space is not None:
        evaluator.check(for_space)
    return evaluator


# --------------------------------------------------------------------------- options shared by the evaluators


def int_option(evaluator: str, option: str, value: object, *, minimum: int) -> int:
    """An integer >= ``minimum`` (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be an integer >= {minimum}, got {value!r}"
        )
    return int(value)


def positive_float_option(evaluator: str, option: str, value: object) -> float:
    """A finite number > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) <= 0
    ):
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be a finite number > 0, got {value!r}"
        )
    return float(value)


def choice_option(evaluator: str, option: str, value: object, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be one of {', '.join(choices)}, got {value!r}"
        )
    return str(value)


def fraction_option(evaluator: str, option: str, value: object, *, zero_allowed: bool) -> float:
    """A number in ``[0, 1)`` (``zero_allowed``) or in ``(0, 1)``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= value < 1
        or (value == 0 and not zero_allowed)
    ):
        interval = "[0, 1)" if zero_allowed else "(0, 1)"
        raise InvalidConfigError(
            f"accuracy evaluator {evaluator}: option {option} must be in {interval}, got {value!r}"
        )
    return float(value)


def threads_option(evaluator: str, value: object) -> int | None:
    """The ``threads`` option: torch threads while evaluating, or None to leave torch's setting."""
    return None if value is None else int_option(evaluator, "threads", value, minimum=1)


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` for the block and restored after it."""
    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
