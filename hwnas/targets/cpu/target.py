"""The host CPU through LLVM: scheduled TIR, compiled, measured for real.

HSS knobs (see :mod:`hwnas.passes` for what each does to the code): data
layout and channel packing, output-channel / row / column / reduction tiles,
loop order, the loops fused into the parallel loop, vector width, unroll,
and the number of runtime threads; and quantization (:mod:`hwnas.hss.quant`:
per-layer weight bits by group, int8/int16 activations: the network is
rewritten to integer arithmetic by :class:`~hwnas.passes.quantize.QuantizeModule`
and the int kernels are scheduled, compiled and measured like float ones).
The default is float (no quantization).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from hwnas.errors import InvalidConfigError
from hwnas.hss import ChoiceParam, Constraint, HardwareSpace, IntParam, Pow2Param
from hwnas.cost import kernel_model, lut, roofline
from hwnas.cost.predictor import LatencyPredictor, network_features
from hwnas.ir import analysis
from hwnas.ir import runtime as measure
from hwnas.ir.lower import build_module
from hwnas.ir.runtime import host_cores, host_cpu, native_lanes
from hwnas.targets.base import Built, MeasureOptions, Target
from hwnas.targets.quantized import QuantizedDeployment
from hwnas.util import filtered_native_stderr


def _env_number(name: str, kind, default, *, low):
    """``$name`` as a ``kind`` number >= ``low``, or ``default`` when unset or empty; read when a target is made."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = kind(text)
    except ValueError:
        raise InvalidConfigError(f"${name} must be a{'n integer' if kind is int else ' number'}, got {text!r}") from None
    if not value >= low:
        raise InvalidConfigError(f"${name} must be >= {low}, got {text!r}")
    return value


class CpuTarget(QuantizedDeployment, Target):
    """The machine hwnas runs on (LLVM, detected ``mcpu``, all its cores)."""

    name = "cpu"
    description = ("host CPU via LLVM: scheduled TIR, measured latency (cpu:tuned: the schedule knobs of each "
                   "conv/dense workload chosen by measurement; cpu:metaschedule: those kernels tuned by "
                   "MetaSchedule; both once per workload, shared across candidates and runs)")
    metrics = ("latency_ms", "latency_std_ms", "peak_memory_kb", "params_kb", "params_packed_kb", "macs")
    #: measure: the whole module, for real; lut: per-kernel measured times, cached and summed;
    #: analytical: a roofline on the machine's measured peaks; predictor:MODEL.json: a trained model
    cost_methods = ("measure", "lut", "analytical", "predictor")
    reference_cost_method = "measure"
    trained_cost_methods = ("predictor",)
    #: measurement settings (:meth:`~hwnas.targets.base.Target.set_measure_options` changes them per instance)
    default_measure_options = MeasureOptions(warmup=3, repeats=10, min_repeat_ms=20.0)

    #: ``cpu:tuned``: each conv and dense kernel is scheduled with the schedule knobs measured best for its
    #: workload (:class:`~hwnas.targets.cpu.tuned_knobs.TunedKnobs`; those knobs leave the searched space);
    #: ``cpu:metaschedule``: they take the best schedule MetaSchedule found for their workload. Either is
    #: tuned on first sight with :attr:`tune_trials` trials, kept in :meth:`tuning_database` and reused by
    #: every later candidate and run; the knobs schedule the other kernels
    TUNED_VARIANTS = ("tuned", "metaschedule")

    def __init__(self, variant: str | None = None) -> None:
        if variant is not None and variant not in self.TUNED_VARIANTS:
            raise InvalidConfigError(f"target 'cpu' takes no variant but one of {', '.join(self.TUNED_VARIANTS)}, "
                                     f"got 'cpu:{variant}'")
        super().__init__(variant)
        self.cores = host_cores()
        #: trials per new workload of ``cpu:tuned`` / ``cpu:metaschedule`` (``$HWNAS_TUNE_TRIALS``, default 32)
        self.tune_trials: int = _env_number("HWNAS_TUNE_TRIALS", int, 32, low=1)
        #: seconds of tuning one build may spend, largest workloads first (``$HWNAS_TUNE_BUDGET_S``; default none)
        self.tune_budget_s: float | None = _env_number("HWNAS_TUNE_BUDGET_S", float, None, low=0)
        #: the RPC device ``measure`` runs on (:meth:`use_remote`), and its LLVM CPU name
        self.remote = None
        self.remote_cpu: str | None = None
        #: the folder the tuning databases live in (None: ``$HWNAS_TUNING_DB``, else ``~/.cache/hwnas/tuning``)
        self.tuning_root: Path | None = None
        #: called with (workload name, seconds) after each workload ``cpu:tuned`` tunes (a progress display)
        self.on_tuned = None

    @functools.cached_property
    def hardware_space(self) -> HardwareSpace:
        space = self.knob_space
        if self.variant == "tuned":
            from hwnas.targets.cpu.tuned_knobs import SCHEDULE_KNOBS

            space = space.fixed(SCHEDULE_KNOBS, "chosen per workload by cpu:tuned")
        return space

    @functools.cached_property
    def knob_space(self) -> HardwareSpace:
        """The CPU's knobs with every value allowed (``cpu:tuned`` draws its per-workload configs from it)."""
        from hwnas.hss.quant import FLOAT, quantization_params
        from hwnas.targets.cpu.passes import LOOP_ORDERS, PARALLEL_AXES
        from hwnas.targets.cpu.tile_conv2d import CONV_ALGOS

        return HardwareSpace(
            name="cpu",
            params={
                "layout": ChoiceParam(("NCHW", "NCHWc"), doc="activation/weight layout of convolutions"),
                "pack": ChoiceParam((4, 8, 16), default_value=8, doc="channel block of the packed NCHWc layout"),
                "tile_oc": Pow2Param(1, 64, default_value=8, doc="output-channel register tile"),
                "tile_oh": Pow2Param(1, 8, default_value=1, doc="output-row tile"),
                "tile_ow": Pow2Param(1, 32, default_value=16, doc="output-column tile"),
                "tile_rc": Pow2Param(1, 64, default_value=8, doc="reduction (input-channel) tile"),
                "loop_order": ChoiceParam(tuple(LOOP_ORDERS), doc="order of the outer tile loops"),
                "parallel": ChoiceParam(
                    tuple(PARALLEL_AXES), default_value="outer", doc="outer tile loops fused into the parallel loop"
                ),
                "vector_width": ChoiceParam(
                    (1, 4, 8, 16), default_value=native_lanes(), doc="lanes of the vectorized inner loop (1: off)"
                ),
                "unroll": ChoiceParam((0, 16, 64, 256), default_value=64, doc="max auto-unroll step of inner loops"),
                "conv_algo": ChoiceParam(CONV_ALGOS, doc="3x3 stride-1 convs in NCHWc: direct loops or Winograd "
                                         "F(2x2,3x3)"),
                "num_threads": IntParam(1, self.cores, default_value=self.cores, doc="runtime threads"),
                **quantization_params(weight_bits=(FLOAT, 8, 6, 4, 2), activation_bits=(FLOAT, 8, 16)),
            },
            constraints=(
                Constraint("conv_algo 'winograd' needs layout 'NCHWc'",
                           lambda c: c["conv_algo"] == "direct" or c["layout"] == "NCHWc"),
                Constraint(
                    "vector_width must not exceed the vectorized tile (tile_oc or tile_ow)",
                    lambda c: c["vector_width"] <= max(c["tile_oc"], c["tile_ow"]),
                ),
            ),
        )

    #: cost methods that price on this machine whatever the device: refused with a remote device
    LOCAL_METHODS = ("lut", "analytical")
    measures_remotely = True

    def use_remote(self, device) -> None:
        """Measure on ``device``: compiled for its CPU (as its TVM reports it), uploaded, timed there.

        The device must have this machine's architecture (the library is linked here);
        its core count is taken to be this machine's (the ``num_threads`` knob's range).
        """
        import tvm

        info = device.device_info()
        here = str(tvm.target.codegen.llvm_get_system_triple())
        if info.get("mtriple", here).split("-")[0] != here.split("-")[0]:
            raise InvalidConfigError(f"device {device.label} is {info['mtriple']}, this machine {here}: "
                                     f"cross-compiling for a remote device is not supported")
        self.remote, self.remote_cpu = device, info.get("mcpu")

    def cost_method(self, method: str | None) -> str:
        method = super().cost_method(method)
        if self.remote is not None and method.partition(":")[0] in self.LOCAL_METHODS:
            raise InvalidConfigError(f"cost method {method} prices on this machine, not on the remote device "
                                     f"{self.remote.label}: use measure (or predictor) with --rpc-tracker")
        return method

    def measured_on(self, method: str) -> str | None:
        if self.remote is not None and method.partition(":")[0] == "measure":
            return self.remote.label
        return None

    def needs_quiet(self, method: str) -> bool:
        if self.measured_on(method) is not None:  # the tracker gives each measurement a device of its own
            return False
        return method.partition(":")[0] in ("measure", "lut")

    def cost_namespace(self, hw: dict[str, Any]) -> str:
        """Where this machine's per-kernel times and peaks are cached (the cpu, its threads)."""
        return f"cost/cpu/{host_cpu()}/threads{int(hw['num_threads'])}"

    def tvm_target(self, hw: dict[str, Any]):
        import tvm

        return tvm.target.Target({"kind": "llvm", "mcpu": self.remote_cpu or host_cpu(),
                                  "num-cores": int(hw["num_threads"])})

    def graph_passes(self, hw: dict[str, Any]) -> list:
        from hwnas.targets.cpu.passes import cpu_graph_passes

        return self.quantize_passes(hw) + cpu_graph_passes(hw)

    def tuning_database(self, hw: dict[str, Any]) -> Path:
        """The MetaSchedule database this machine's tuned schedules live in (one per cpu and thread count).

        :attr:`tuning_root`, else ``$HWNAS_TUNING_DB``, names the parent folder; the default is
        ``~/.cache/hwnas/tuning``: shared by every run on this machine.
        """
        root = Path(self.tuning_root or os.environ.get("HWNAS_TUNING_DB")
                    or Path.home() / ".cache" / "hwnas" / "tuning")
        return root / f"{host_cpu()}-threads{int(hw['num_threads'])}"

    def schedule_passes(self, hw: dict[str, Any]) -> list:
        from hwnas.targets.cpu.passes import cpu_schedule_passes

        passes = cpu_schedule_passes(hw)
        if self.variant is None:
            return passes
        from hwnas.ir.workloads import is_mac_kernel, iterations

        common = {"budget_s": self.tune_budget_s, "priority": iterations, "trials": self.tune_trials}
        if self.variant == "tuned":
            from hwnas.targets.cpu.tuned_knobs import SCHEDULE_KNOBS, TunedKnobs, tunable

            space = self.knob_space
            measure.set_num_threads(int(hw["num_threads"]))  # the kernels are timed with the build's threads
            self.last_tuning = TunedKnobs(
                self.tuning_database(hw), self.tvm_target(hw), tunable, hw,
                {k: space.params[k].values for k in SCHEDULE_KNOBS}, valid=space.is_valid,
                **common)
        else:
            from hwnas.targets.cpu.tuned_schedules import TunedSchedules

            self.last_tuning = TunedSchedules(self.tuning_database(hw), self.tvm_target(hw), is_mac_kernel, **common)
        self.last_tuning.on_tuned = self.on_tuned
        return [self.last_tuning] + passes

    #: the network-wide layouts ``hwnas tune`` tries, most promising first (``layout`` x ``pack`` x ``conv_algo``)
    TUNE_LAYOUTS = tuple({"layout": "NCHWc", "pack": pack, "conv_algo": algo} for pack in (16, 8)
                         for algo in ("winograd", "direct")) + (
        {"layout": "NCHW", "conv_algo": "direct"}, {"layout": "NCHWc", "pack": 4, "conv_algo": "winograd"},
        {"layout": "NCHWc", "pack": 4, "conv_algo": "direct"})

    def network_configs(self, threads: int | None = None) -> list[dict[str, Any]]:
        """The network-wide hardware configs ``hwnas tune`` searches (the per-workload knobs tuned inside each).

        Every layout of :attr:`TUNE_LAYOUTS` with ``threads`` runtime threads
        (None: all the cores first, then each smaller count), in the order they are tried.
        """
        counts = [threads] if threads else list(range(self.cores, 0, -1))
        return [{**layout, "num_threads": n} for n in counts for layout in self.TUNE_LAYOUTS]

    def build(self, mod, hw: dict[str, Any]) -> Built:
        built = build_module(mod, self.tvm_target(hw), hw, what="for cpu")
        tuning = getattr(self, "last_tuning", None)
        if tuning is not None:  # kernels whose tuned schedule was reused / tuned now
            built.facts["counters"] = {"tuning_reused": tuning.stats["reused"], "tuning_tuned": tuning.stats["tuned"],
                                       "tuning_untuned": tuning.stats["untuned"], "tuning_s": tuning.tuning_s}
            self.last_tuning = None
        return built

    def cost(self, built: Built, *, method: str) -> dict[str, float]:
        from hwnas.passes.quantize import quantization_info
        from hwnas.targets.quantized import packed_param_bytes
        from hwnas.ir.workloads import extract

        method = self.cost_method(method)
        base, _, arg = method.partition(":")
        threads = int(built.hw["num_threads"])
        namespace = self.cost_namespace(built.hw)
        if base == "measure" and self.remote is not None:
            from hwnas.targets.remote import measure_remote

            arrays = list(measure.random_inputs(built.inputs).values())
            opts = self.measure_options
            timing, _ = measure_remote(built.executable, arrays, self.remote, num_threads=threads, warmup=opts.warmup,
                                       repeats=opts.repeats, min_repeat_ms=opts.min_repeat_ms)
            values = {"latency_ms": timing.median_ms, "latency_std_ms": timing.std_ms}
        elif base == "measure":
            measure.set_num_threads(threads)
            arrays = list(measure.random_inputs(built.inputs).values())
            opts = self.measure_options
            timing = measure.measure_vm(
                built.executable, arrays, warmup=opts.warmup, repeats=opts.repeats, min_repeat_ms=opts.min_repeat_ms
            )
            values = {"latency_ms": timing.median_ms, "latency_std_ms": timing.std_ms}
        elif base == "lut":
            table = lut.lut_latency(built, cache=self.cache, namespace=namespace, num_threads=threads)
            values = {"latency_ms": table.latency_ms}
        elif base == "analytical":
            peaks = roofline.machine_peaks(cache=self.cache, namespace=namespace, num_threads=threads)
            overhead = lut.runtime_overhead(built.tvm_target, cache=self.cache, namespace=namespace,
                                            num_threads=threads)
            workloads = built.fact("workloads", lambda b: extract(b.module))
            values = {"latency_ms": roofline.roofline_ms(workloads, **peaks, **overhead)}
        elif kernel_model.is_kernel_model(arg):  # predictor:KERNELS.json (hwnas predictor build)
            model = kernel_model.KernelPredictor.load(arg)
            trained_for = model.metadata.get("target")
            if trained_for not in (None, self.spec):
                raise InvalidConfigError(f"kernel predictor {arg} was built for target {trained_for}, not {self.spec}")
            workloads = built.fact("workloads", lambda b: extract(b.module))
            values = {"latency_ms": model.predict_network(workloads, built.hw, self.hardware_space)}
        else:  # predictor:MODEL
            model = LatencyPredictor.load(arg)
            trained_for = model.metadata.get("target")
            if trained_for not in (None, self.spec):
                raise InvalidConfigError(f"predictor {arg} was trained for target {trained_for}, not {self.spec}")
            workloads = built.fact("workloads", lambda b: extract(b.module))
            feats = network_features(workloads, built.hw, self.hardware_space)
            mean, spread = model.predict([feats])
            values = {"latency_ms": float(mean[0]), "latency_std_ms": float(spread[0])}
        values["peak_memory_kb"] = built.fact("memory", lambda b: analysis.planned_memory(b.module))["peak"] / 1024
        values["params_kb"] = built.fact("param_bytes", lambda b: analysis.param_bytes(b.module)) / 1024
        values["params_packed_kb"] = packed_param_bytes(values["params_kb"] * 1024,
                                                        quantization_info(built.module)) / 1024
        return values

    def analyse(self, built: Built) -> None:
        """The memory plan, parameter bytes and kernels of ``built``, and this machine's peaks and runtime
        overhead for its thread count (measured once per process and cache namespace)."""
        if self.remote is None:
            self.cost(built, method="analytical")

    def emit(self, built: Built, out_dir: Path) -> dict[str, Path]:
        path = Path(out_dir) / "model.so"
        with filtered_native_stderr():
            built.executable.export_library(str(path))
        return {"library": path}

    def runtime_info(self, built: Built) -> dict[str, Any]:
        from hwnas.passes.quantize import quantization_info

        info = {"device": "cpu", "num_threads": int(built.hw["num_threads"])}
        quant = quantization_info(built.module)
        if quant is not None:  # integer input and output: x_q = clip(round(x / input_scale)), y = y_q * output_scale
            info["quantization"] = quant
        return info
