"""The contract of a target backend.

A target declares its hardware search space as data, the TVM passes that apply
one configuration, how to build, how to cost and how to emit an artifact. The
pipeline calls these methods in one order and never looks at a target's name:

    graph_passes(hw) -> [lower to fused PrimFuncs] -> schedule_passes(hw)
        -> build(mod, hw) -> cost(built, method=...) -> emit(built, out_dir)
"""

from __future__ import annotations

import abc
from pathlib import Path
from typing import Any, ClassVar

from hwnas.cost.cache import MemoryCache
from hwnas.errors import InvalidConfigError
from hwnas.hss import HardwareSpace
from hwnas.ir.built import Built


class Target(abc.ABC):
    """A backend. Subclasses set the class attributes and implement the methods."""

    #: registry name, e.g. ``"cpu"``; ``"mcu:stm32f746"`` passes ``"stm32f746"`` as ``variant``
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: metric names (see :mod:`hwnas.metrics`) that :meth:`cost` returns
    metrics: ClassVar[tuple[str, ...]] = ()
    #: cost methods :meth:`cost` accepts; the first is the default
    cost_methods: ClassVar[tuple[str, ...]] = ()
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

        A method may carry an argument after a colon: ``predictor:model.json``
        names the trained model (the ``predictor`` method needs one).
        """
        if method is None:
            return self.cost_methods[0]
        base, _, arg = str(method).partition(":")
        if base not in self.cost_methods:
            raise InvalidConfigError(
                f"target {self.spec} has no cost method {base!r}; it has: {', '.join(self.cost_methods)}"
            )
        if base == "predictor" and not arg:
            raise InvalidConfigError("the predictor cost method needs a trained model: --cost predictor:MODEL.json "
                                     "(train one with `hwnas predictor train`)")
        if base == "predictor" and not Path(arg).is_file():
            raise InvalidConfigError(f"predictor model {arg} does not exist; train one with `hwnas predictor train`")
        return method

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

    def runtime_info(self, built: Built) -> dict[str, Any]:
        """What a loader needs to run the emitted library with the stock TVM runtime
        (written into the manifest): ``{"device": "cpu", ...}``."""
        return {"device": "cpu"}
