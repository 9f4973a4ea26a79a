"""Tune a user's ONNX model for a target within a time budget (``hwnas tune``).

The target lists the network-wide hardware configs worth trying
(``network_configs``: on ``cpu`` the layouts, packs, Winograd or direct 3x3
convs, thread counts, most promising first). Each is compiled with the
target's ``tuned`` variant, whose per-workload knob tuning runs inside it and
keeps what it tuned in the tuning database, and measured. Configs are tried
in order while the next one fits in the budget (judged by the time the
compiles so far took; the per-workload tuning of a config gets what is left).
The tuning database is shared by every config and every later run: a run
stopped by its budget is resumed by running it again (the workloads tuned
before are reused, so the configs come cheaper), and a run that finds every
workload tuned only compiles and measures.

Closing: ONNX Runtime and the fastest (up to) three configs are timed again
together, in alternating rounds in this process (:func:`in_rounds`); the
fastest median wins, its output is checked against ONNX Runtime's, and its
ratio to ONNX Runtime is what the rounds measured.
"""

from __future__ import annotations

import dataclasses
import logging
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hwnas.errors import CompileError, HwnasError, InvalidConfigError, RunError
from hwnas.ir import runtime as measure
from hwnas.ir.lower import load_onnx, static_input_shapes
from hwnas.pipeline.evaluate import Candidate, Evaluation, evaluate
from hwnas.targets import Target, get_target
from hwnas.util import error_line

log = logging.getLogger(__name__)

#: a sample of a runtime: the mean of enough back-to-back calls to last this long (s)
MIN_SAMPLE_S = 0.020
#: seconds of idle before each run of samples, so the previous runtime's pool threads stop spinning: on
#: 2 cores ONNX Runtime timed right after the tuned MobileNetV2 took 17 ms for its first call and 8.5 ms
#: per call over its first 40 ms, 5.1 ms later; after 0.2 s idle, 5.2-5.4 ms from the first call (2026-12-05)
SETTLE_S = 0.2
#: rounds of the closing timing, and samples per runtime and round
ROUNDS, PER_ROUND = 3, 5
#: configs timed again in the closing rounds
FINALISTS = 3
#: relative tolerance of the chosen build's output against ONNX Runtime's (of the largest reference value)
RTOL = 1e-4


@dataclasses.dataclass
class Step:
    """One network-wide config tried: its measured latency (None when it failed) and its tuning counters."""

    hw: dict[str, Any]
    latency_ms: float | None
    seconds: float
    counters: dict[str, float]
    error: str | None = None


@dataclasses.dataclass
class TuneState:
    """What a progress display shows: elapsed / budget, the config being built, best so far, ONNX Runtime."""

    elapsed_s: float
    budget_s: float
    index: int
    total: int
    current: str
    best_ms: float | None
    best: str
    ort_ms: float
    workloads_tuned: int


@dataclasses.dataclass
class TuneOutcome:
    best: Evaluation
    #: medians of the closing rounds (ms) for the chosen build and ONNX Runtime
    best_ms: float
    ort_ms: float
    steps: list[Step]
    seconds: float
    #: why the search stopped: every config tried, or the budget
    stopped: str
    #: largest |hwnas - ONNX Runtime| over the output, relative to the largest reference value
    rel_error: float

    @property
    def ratio(self) -> float:
        return self.best_ms / self.ort_ms

    def record(self) -> dict[str, Any]:
        """A JSON-able account of the tuning (written beside the bundle)."""
        return {"best_hw": self.best.hw, "best_ms": self.best_ms, "onnxruntime_ms": self.ort_ms,
                "ratio_to_onnxruntime": self.ratio, "seconds": self.seconds, "stopped": self.stopped,
                "rel_error_vs_onnxruntime": self.rel_error,
                "configs": [dataclasses.asdict(s) for s in self.steps]}


def label(hw: dict[str, Any]) -> str:
    """``NCHWc16 winograd, 2 threads``: a network-wide config in a few words."""
    text = str(hw.get("layout", "")) + (str(hw["pack"]) if hw.get("layout") == "NCHWc" else "")
    text += " winograd" if hw.get("conv_algo") == "winograd" else ""
    return f"{text}, {hw['num_threads']} thread{'s' if hw['num_threads'] != 1 else ''}" if "num_threads" in hw else text


def sampler(fn: Callable[[], Any]) -> Callable[[], float]:
    """A call giving one sample of ``fn`` in ms: the mean of enough back-to-back calls to last ``MIN_SAMPLE_S``."""
    for _ in range(2):
        fn()
    t0 = time.perf_counter()
    fn()
    number = max(1, int(MIN_SAMPLE_S / max(time.perf_counter() - t0, 1e-6)))

    def sample() -> float:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number * 1e3

    return sample


def in_rounds(runtimes: dict[str, Callable[[], Any]], *, rounds: int = ROUNDS,
              per_round: int = PER_ROUND) -> dict[str, list[float]]:
    """Samples (ms) of each runtime taken in ``rounds`` rounds of ``per_round`` consecutive samples each.

    The order of the runtimes turns by one from round to round, so a drift of
    the machine hits them all alike, and no runtime is timed right after a
    switch against another's thread pool (each run of samples starts after
    :data:`SETTLE_S` idle and a warm-up).
    """
    names = list(runtimes)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            time.sleep(SETTLE_S)
            sample = sampler(runtimes[name])
            samples[name] += [sample() for _ in range(per_round)]
    return samples


class OrtRunner:
    """ONNX Runtime on the model with ``threads`` intra-op threads, on fixed inputs.

    ``spinning``: ONNX Runtime's default, its pool threads spin while they wait
    for work; False turns that off (much faster on a machine with more busy
    threads than cores: 21 against 39 ms for MobileNetV2 at 224x224 on 2 cores
    with a load average of 14).
    """

    def __init__(self, onnx_path: str | Path, inputs: dict[str, np.ndarray], threads: int, *,
                 spinning: bool = True) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        if not spinning:
            so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own untyped errors
            raise RunError(f"ONNX Runtime cannot run {onnx_path}: {error_line(exc)}") from None
        self.feed = {i.name: inputs[i.name] for i in self.session.get_inputs()}

    def __call__(self):
        return self.session.run(None, self.feed)


def vm_runner(built, arrays: list[np.ndarray]) -> tuple[Callable[[], Any], np.ndarray]:
    """A zero-argument call running ``built``'s ``main`` on ``arrays``, and its first output."""
    import tvm
    from tvm import relax

    dev = tvm.cpu()
    vm = relax.VirtualMachine(built.executable, dev)
    args = [tvm.runtime.tensor(a, dev) for a in arrays]
    main = vm["main"]

    def run():
        return main(*args)

    out = run()
    if not hasattr(out, "numpy"):  # a tuple of outputs: the first is compared
        out = out[0]
    return run, out.numpy()


def relative_error(out: np.ndarray, reference: np.ndarray) -> float:
    """max |out - reference| over max |reference| (1 when the shapes differ)."""
    if out.shape != reference.shape:
        return 1.0
    scale = max(float(np.max(np.abs(reference))), 1e-30)
    return float(np.max(np.abs(out.astype(np.float64) - reference))) / scale


def tuned_target(spec: str) -> Target:
    """The target whose ``tuned`` variant ``hwnas tune`` compiles with (``cpu`` -> ``cpu:tuned``)."""
    target = get_target(spec)
    if not hasattr(target, "network_configs") or "tuned" not in getattr(target, "TUNED_VARIANTS", ()):
        raise InvalidConfigError(f"target {spec} has no tuned variant: hwnas tune works with cpu")
    if target.variant != "tuned":
        target = get_target(f"{target.name}:tuned")
    return target


def check_model(onnx_path: str | Path) -> None:
    """One clear error for a model ``tune`` cannot take: unreadable, or any symbolic dimension."""
    model = load_onnx(onnx_path)
    for name, dims in static_input_shapes(model).items():
        inp = next(i for i in model.graph.input if i.name == name)
        first = inp.type.tensor_type.shape.dim[0] if dims else None
        if first is not None and not (first.HasField("dim_value") and first.dim_value > 0):
            raise InvalidConfigError(f"input {name!r} of {onnx_path} has a dynamic batch dimension "
                                     f"({first.dim_param or '?'}): tuning times one shape, export the model "
                                     f"with fixed shapes")


def check_options(onnx_path: str | Path, spec: str, *, budget_s: float, threads: int | None,
                  trials: int) -> Target:
    """The tuned target for ``spec``, once the model and options are checked (one clear error otherwise)."""
    if not budget_s > 0:
        raise InvalidConfigError(f"--minutes must be > 0, got {budget_s / 60:g}")
    if trials < 1:
        raise InvalidConfigError(f"--trials must be >= 1, got {trials}")
    target = tuned_target(spec)
    if threads is not None and not 1 <= threads <= target.cores:
        raise InvalidConfigError(f"--threads must be between 1 and {target.cores} (this machine's cores), "
                                 f"got {threads}")
    check_model(onnx_path)
    return target


def tune_model(onnx_path: str | Path, spec: str = "cpu", *, budget_s: float, threads: int | None = None,
               trials: int = 32, database: str | Path | None = None,
               on_progress: Callable[[TuneState], None] | None = None) -> TuneOutcome:
    """Search ``spec``'s network-wide configs for the model at ``onnx_path`` within ``budget_s`` seconds.

    ``threads`` fixes the thread count (None: the target's configs try each);
    ONNX Runtime runs with the largest thread count tried. ``trials``: knob
    configs timed per new workload. ``database``: the tuning database folder
    (None: the target's default, shared by every run on this machine).
    """
    t0 = time.perf_counter()
    target = check_options(onnx_path, spec, budget_s=budget_s, threads=threads, trials=trials)
    configs = target.network_configs(threads)
    if database is not None:
        target.tuning_root = Path(database)
    target.tune_trials = int(trials)
    target.set_measure_options(repeats=10)
    # kept for the bundle's writing and the closing rounds: a share of the budget, at least 10 s, at most a minute
    reserve_s = min(60.0, max(10.0, 0.05 * budget_s))
    ort_threads = max(int(c["num_threads"]) for c in configs)

    steps: list[Step] = []
    evaluations: list[tuple[float, Evaluation]] = []
    ort = None
    ort_ms = float("nan")
    best_ms, best_label, tuned_count = None, "-", 0

    def show(index: int, current: str) -> None:
        if on_progress is not None:
            on_progress(TuneState(elapsed_s=time.perf_counter() - t0, budget_s=budget_s, index=index,
                                  total=len(configs), current=current, best_ms=best_ms, best=best_label,
                                  ort_ms=ort_ms, workloads_tuned=tuned_count))

    stopped = "every config tried"
    overhead_s: list[float] = []  # per config: its seconds beyond the per-workload tuning (compile, measure)
    for index, config in enumerate(configs):
        elapsed = time.perf_counter() - t0
        left = budget_s - reserve_s - elapsed
        next_overhead = statistics.mean(overhead_s) if overhead_s else 0.0
        if steps and left < next_overhead:
            stopped = "budget"
            break
        # the first config's compile time is unknown: its tuning may take three quarters of what is left
        target.tune_budget_s = max(0.0, left - next_overhead if overhead_s else 0.75 * left)

        def tuned(name, seconds, index=index, config=config):
            nonlocal tuned_count
            tuned_count += 1
            show(index, label(config))

        target.on_tuned = tuned
        show(index, label(config))
        start = time.perf_counter()
        try:
            ev = evaluate(Candidate.from_onnx(onnx_path, config), target, cost="measure")
        except HwnasError as exc:  # a config that does not compile is recorded; the search goes on
            if isinstance(exc, InvalidConfigError) and not steps:
                raise
            steps.append(Step(hw=dict(config), latency_ms=None, seconds=time.perf_counter() - start, counters={},
                              error=str(exc)))
            log.warning("tune: %s failed: %s", label(config), exc)
            continue
        seconds = time.perf_counter() - start
        counters = {k: ev.timings[k] for k in ("tuning_tuned", "tuning_reused", "tuning_untuned", "tuning_s")
                    if k in ev.timings}
        overhead_s.append(max(0.0, seconds - counters.get("tuning_s", 0.0)))
        ms = ev.metrics["latency_ms"]
        steps.append(Step(hw=dict(ev.hw), latency_ms=ms, seconds=seconds, counters=counters))
        evaluations.append((ms, ev))
        # only the finalists' builds are kept (a 224x224 network's weights are 10-100 MB per build)
        evaluations = sorted(evaluations, key=lambda t: t[0])[:FINALISTS]
        if ort is None:  # ONNX Runtime beside the bar, timed once the first build gave the inputs
            arrays = measure.random_inputs(ev.built.inputs)
            ort = OrtRunner(onnx_path, arrays, ort_threads)
            ort_ms = statistics.median(in_rounds({"ort": ort}, rounds=1)["ort"])
        if best_ms is None or ms < best_ms:
            best_ms, best_label = ms, label(ev.hw)
        show(index + 1, "")
    if not evaluations:
        raise CompileError(f"no config of {target.spec} compiled the model: {steps[0].error if steps else '?'}")

    # closing: the fastest builds and ONNX Runtime timed again together, in alternating rounds
    finalists = [ev for _, ev in evaluations]
    measure.set_num_threads(ort_threads)
    reference = ort()[0]
    runtimes: dict[str, Callable[[], Any]] = {"ort": ort}
    outputs = {}
    for i, ev in enumerate(finalists):
        arrays = list(measure.random_inputs(ev.built.inputs).values())
        runtimes[str(i)], outputs[str(i)] = vm_runner(ev.built, arrays)
    errors = {key: relative_error(out, reference) for key, out in outputs.items()}
    runtimes = {k: v for k, v in runtimes.items() if k == "ort" or errors[k] <= RTOL}
    if len(runtimes) == 1:
        nearest = min(errors.values())
        raise CompileError(f"the tuned build's output differs from ONNX Runtime's by {nearest:.1e} (relative): "
                           f"not written")
    # thread counts differ between configs: each build runs with its own pool size, ORT with its own
    samples = {}
    for r in range(ROUNDS):
        for key in list(runtimes)[r % len(runtimes):] + list(runtimes)[: r % len(runtimes)]:
            if key != "ort":
                measure.set_num_threads(int(finalists[int(key)].hw["num_threads"]))
            samples.setdefault(key, []).extend(in_rounds({key: runtimes[key]}, rounds=1)[key])
    medians = {key: statistics.median(values) for key, values in samples.items()}
    chosen = min((k for k in medians if k != "ort"), key=medians.get)
    best = finalists[int(chosen)]
    measure.set_num_threads(int(best.hw["num_threads"]))
    return TuneOutcome(best=best, best_ms=medians[chosen], ort_ms=medians["ort"], steps=steps,
                       seconds=time.perf_counter() - t0, stopped=stopped, rel_error=errors[chosen])
