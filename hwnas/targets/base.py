"""The contract of a target backend.

A target declares its hardware search space as data, the TVM passes that apply
one configuration, how to build, how to cost and how to emit an artifact. The
pipeline calls these methods in one order and never looks at a target's name:

    graph_passes(hw) -> [lower to fused PrimFuncs] -> schedule_passes(hw)
        -> build(mod, hw) -> cost(built, method=...) -> emit(built, out_dir)
"""

from __future__ import annotations

import abc
import dataclasses
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from hwnas.cost.cache import MemoryCache
from hwnas.errors import InvalidConfigError
from hwnas.hss import HardwareSpace
from hwnas.ir.built import Built


@dataclasses.dataclass(frozen=True)
class MeasureOptions:
    """How a target's ``measure`` cost method times a compiled module.

    ``warmup`` untimed runs, then ``repeats`` timed repeats, each made of as
    many runs as last ``min_repeat_ms`` (the median and spread are reported).
    """

    warmup: int = 3
    repeats: int = 10
    min_repeat_ms: float = 20.0

    def __post_init__(self) -> None:
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise InvalidConfigError(f"measurement repeats must be an integer >= 1, got {self.repeats!r}")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise InvalidConfigError(f"measurement warmup must be an integer >= 0, got {self.warmup!r}")
        if isinstance(self.min_repeat_ms, bool) or not isinstance(self.min_repeat_ms, (int, float)) \
                or not self.min_repeat_ms >= 0:
            raise InvalidConfigError(f"min_repeat_ms must be >= 0, got {self.min_repeat_ms!r}")


class Target(abc.ABC):
    """A backend. Subclasses set the class attributes and implement the methods."""

    #: registry name, e.g. ``"cpu"``; ``"mcu:stm32f746"`` passes ``"stm32f746"`` as ``variant``
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: metric names (see :mod:`hwnas.metrics`) that :meth:`cost` returns
    metrics: ClassVar[tuple[str, ...]] = ()
    #: cost methods :meth:`cost` accepts; the first is the default
    cost_methods: ClassVar[tuple[str, ...]] = ()
    #: the method the others are judged against (ground truth: ``hwnas bench cost-models`` compares every other
    #: method with it, and ``hwnas predictor train`` learns it); None: the default method
    reference_cost_method: ClassVar[str | None] = None
    #: methods that take a trained model after a colon (``predictor:MODEL.json``), trained by
    #: ``hwnas predictor train`` on the reference method's figures
    trained_cost_methods: ClassVar[tuple[str, ...]] = ()
    #: how the ``measure`` method times a module; None for targets that do not measure
    #: (:attr:`measure_options`, :meth:`set_measure_options`)
    default_measure_options: ClassVar[MeasureOptions | None] = None
    #: the variants a target needs (``mcu:<board>``); empty when it takes none
    variants: ClassVar[tuple[str, ...]] = ()

    def __init__(self, variant: str | None = None) -> None:
        self.variant = variant

    #: where cost methods keep what they measured once (per-kernel times, machine peaks): anything
    #: with ``get(namespace, key, default)`` and ``put(namespace, key, value)``; a search sets its
    #: results store here (:meth:`use_cache`), otherwise a process-local cache is used
    _cache: Any = None

    @property
    def cache(self):
        if self._cache is None:
            self._cache = MemoryCache()
        return self._cache

    def use_cache(self, cache) -> None:
        """Keep cost-method results in ``cache`` (e.g. a :class:`hwnas.pipeline.store.ResultStore`)."""
        self._cache = cache

    @property
    def spec(self) -> str:
        """The name a user types for this target instance."""
        return self.name if self.variant is None else f"{self.name}:{self.variant}"

    #: True for targets that can measure on a device reached over TVM RPC (:meth:`use_remote`)
    measures_remotely: ClassVar[bool] = False

    def use_remote(self, device) -> None:
        """Measure on ``device`` (a :class:`hwnas.targets.remote.RemoteDevice`, reached through a TVM RPC
        tracker) instead of this machine. Targets that cannot say so in one line."""
        raise InvalidConfigError(f"target {self.spec} cannot measure on a remote device (--rpc-tracker); "
                                 f"targets that can: cpu")

    def measured_on(self, method: str) -> str | None:
        """Where ``method`` measures, when not on this machine (``rpc:KEY@HOST:PORT``); None otherwise."""
        return None

    def needs_quiet(self, method: str) -> bool:
        """True when ``method`` measures on this machine, so other work must pause meanwhile."""
        return False

    def cost_method(self, method: str | None) -> str:
        """``method``, or the default one when None; a clear error if the target lacks it.

        A method of :attr:`trained_cost_methods` carries the trained model after
        a colon (``predictor:model.json``), and needs it.
        """
        if method is None:
            return self.cost_methods[0]
        base, _, arg = str(method).partition(":")
        if base not in self.cost_methods:
            raise InvalidConfigError(
                f"target {self.spec} has no cost method {base!r}; it has: {', '.join(self.cost_methods)}"
            )
        if base in self.trained_cost_methods and not arg:
            raise InvalidConfigError(f"the {base} cost method needs a trained model: --cost {base}:MODEL.json "
                                     "(train one with `hwnas predictor train`)")
        if base in self.trained_cost_methods and not Path(arg).is_file():
            raise InvalidConfigError(f"{base} model {arg} does not exist; train one with `hwnas predictor train`")
        return method

    @property
    def reference_method(self) -> str:
        """The method the others are judged against (:attr:`reference_cost_method`, else the default one)."""
        return self.reference_cost_method or self.cost_method(None)

    @property
    def estimate_methods(self) -> tuple[str, ...]:
        """The methods that price a built module alone, other than :attr:`reference_method` (the trained
        ones need a model, so they are not among them): what ``hwnas bench cost-models`` judges."""
        return tuple(m for m in self.cost_methods
                     if m != self.reference_method and m not in self.trained_cost_methods)

    _measure_options: MeasureOptions | None = None

    @property
    def measure_options(self) -> MeasureOptions | None:
        """How ``measure`` times a module on this target instance; None when the target does not measure."""
        return self._measure_options or self.default_measure_options

    def set_measure_options(self, **changes) -> None:
        """Change this instance's :attr:`measure_options` (``warmup``, ``repeats``, ``min_repeat_ms``)."""
        if self.measure_options is None:
            raise InvalidConfigError(f"target {self.spec} does not measure (its cost methods: "
                                     f"{', '.join(self.cost_methods)}): it takes no measurement options")
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(MeasureOptions)})
        if unknown:
            raise InvalidConfigError(f"unknown measurement option {unknown[0]!r}; known: warmup, repeats, "
                                     f"min_repeat_ms")
        self._measure_options = dataclasses.replace(self.measure_options, **changes)

    def analyse(self, built: Built) -> None:
        """Compute, once per built module, the static figures every cost method of this target reads (memory
        plan, kernels; a measured machine peak), so that timing a cost method times that method alone."""

    @property
    @abc.abstractmethod
    def hardware_space(self) -> HardwareSpace:
        """The HSS: the knobs a search may set."""

    #: False for targets that price an architecture without compiling it
    #: (published measurement tables): they implement :meth:`cost_architecture`
    compiles: ClassVar[bool] = True

    def tvm_target(self, hw: dict[str, Any]):
        """The ``tvm.target.Target`` the module is compiled for."""
        raise InvalidConfigError(f"target {self.spec} does not compile networks")

    def graph_passes(self, hw: dict[str, Any]) -> list:
        """Relax passes run on the imported module before legalization and fusion."""
        return []

    def schedule_passes(self, hw: dict[str, Any]) -> list:
        """Passes run on the fused module: they schedule its PrimFuncs for ``hw``."""
        return []

    def build(self, mod, hw: dict[str, Any]) -> Built:
        """Compile a fused, scheduled module."""
        raise InvalidConfigError(f"target {self.spec} does not compile networks")

    def cost(self, built: Built, *, method: str) -> dict[str, float]:
        """Metrics of a built module by ``method`` (one of :attr:`cost_methods`)."""
        raise InvalidConfigError(f"target {self.spec} does not compile networks")

    def cost_architecture(self, space, genome, hw: dict[str, Any], *, method: str) -> dict[str, float]:
        """Metrics of an architecture without compiling it (targets with ``compiles = False``)."""
        raise InvalidConfigError(f"target {self.spec} prices compiled modules only")

    def builtin_constraints(self) -> tuple[str, ...]:
        """Constraints (``METRIC<=VALUE`` on this target's own metrics) every search on this target obeys,
        e.g. its hardware budget; a point that violates one is infeasible, like a ``--constraint``."""
        return ()

    def capacity(self) -> dict[str, float]:
        """The most of a metric the device holds, by metric (e.g. ``peak_memory_kb``: its SRAM in KiB); a
        compiled network over one of them does not fit (``hwnas compile`` refuses its bundle). {} when the
        device bounds nothing."""
        return {}

    def emit(self, built: Built, out_dir: Path) -> dict[str, Path]:
        """Write the deployable files into ``out_dir``; return role -> path."""
        raise InvalidConfigError(f"target {self.spec} emits no artifacts")

    def device_check(self, built: Built, out_dir: Path, x: np.ndarray, labels: np.ndarray,
                     classes: int) -> dict[str, Any] | None:
        """For a bundle with trained weights whose device build differs from its host library (e.g. a C
        bundle for a microcontroller): make the device build in ``out_dir`` run the test images ``x``
        (float, preprocessed to the network's input), run it where it can run and compare its predictions
        with the host's; the record goes into the manifest as ``device_check``. None: the library the
        accuracy was measured on is the deployed code."""
        return None

    #: knobs that change what the deployed network computes (e.g. its bit-widths): a search whose accuracy
    #: evaluator cannot run the deployed network holds them at their defaults, or they would look free
    deployment_knobs: tuple[str, ...] = ()

    def deployment_key(self, hw: dict[str, Any]) -> str | None:
        """None when the device computes what the float network computes; otherwise a key naming the
        numerics it runs instead (e.g. int8 quantization), for accuracy evaluators that can measure
        the deployed network through :meth:`deploy_network` (and cache it under this key)."""
        return None

    def deploy_network(self, model, input_shape, calibration, hw: dict[str, Any]):
        """A function ``float inputs (N, ...) -> outputs (N, ...)`` computing what the device computes
        for the trained torch ``model`` (targets whose :meth:`deployment_key` is not None)."""
        raise InvalidConfigError(f"target {self.spec} runs the network as trained")

    def calibrate_with(self, batch: np.ndarray) -> None:
        """Calibrate what this target quantizes on ``batch`` (float inputs ``(N, C, H, W)`` at the network's
        input shape: training images of the network's own data) instead of its default images; a target
        that quantizes nothing ignores it."""

    def runtime_info(self, built: Built) -> dict[str, Any]:
        """What a loader needs to run the emitted library with the stock TVM runtime
        (written into the manifest): ``{"device": "cpu", ...}``."""
        return {"device": "cpu"}
