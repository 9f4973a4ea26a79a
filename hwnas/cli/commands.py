"""The ``hwnas`` command line.

Every error a user can cause ends in one line on stderr and exit status 2;
a traceback is a bug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from hwnas.cli.progress import Counter, Progress
from hwnas.cli.tune import add_parser as add_tune_parser
from hwnas.errors import HwnasError, InvalidConfigError, InvalidGenomeError

log = logging.getLogger("hwnas")


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line."""

    def error(self, message: str):  # noqa: D401
        self.exit(2, f"{self.prog}: error: {message}\n")


def _json_arg(text: str, *, what: str, kind: type, error: type[HwnasError]):
    try:
        value = json.loads(text)
    except ValueError:
        raise error(f"{what} must be JSON, got {text!r}") from None
    if not isinstance(value, kind):
        raise error(f"{what} must be a JSON {'list' if kind is list else 'object'}, got {text!r}")
    return value


def _table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(h).ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(c).ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def cmd_targets(args) -> int:
    from hwnas.targets import get_target, plugin_errors, target_class, target_names

    for name in target_names():
        cls = target_class(name)
        t = get_target(f"{name}:{cls.variants[0]}" if cls.variants else name)
        print(f"{name}{':<variant>' if cls.variants else ''}: {t.description}")
        if cls.variants:
            print(f"  variants: {', '.join(cls.variants)}")
        print(f"  metrics: {', '.join(t.metrics)}")
        print(f"  cost methods: {', '.join(t.cost_methods)} (default {t.cost_methods[0]})")
        rows = t.hardware_space.describe()
        if rows:
            print("  " + _table(rows, ("knob", "values", "default", "meaning")).replace("\n", "\n  "))
        else:
            print("  no hardware knobs")
        print()
    for line in plugin_errors():
        print(f"hwnas: warning: {line}", file=sys.stderr)
    return 0


def cmd_spaces(args) -> int:
    from hwnas.arch import get_space, space_names

    rows = []
    for name in space_names():
        s = get_space(name)
        rows.append((name, str(s.size), f"{s.num_candidates:.3g}", s.description))
    print(_table(rows, ("space", "genes", "networks", "description")))
    return 0


def _format_metric(name: str, value: float) -> str:
    if name == "macs":
        return f"{value / 1e6:.2f} M"
    return f"{value:.4g}"


def cmd_compile(args) -> int:
    import tempfile

    import numpy as np

    from hwnas.arch import get_space
    from hwnas.metrics import overflows
    from hwnas.pipeline.artifacts import check_out_dir, write_bundle
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.ir.lower import load_onnx
    from hwnas.targets import get_target

    target = get_target(args.target)
    hw = _json_arg(args.hw, what="--hw", kind=dict, error=InvalidConfigError) if args.hw else {}
    if args.onnx:
        if args.space or args.genome:
            raise InvalidConfigError("--onnx replaces --space and --genome; give one or the other")
        load_onnx(args.onnx)  # fail fast on a bad file
        candidate = Candidate.from_onnx(args.onnx, hw)
    else:
        space = None
        if args.supernet:
            from hwnas.accuracy.supernet import SupernetFile

            header = SupernetFile.read(args.supernet).header  # its space, unless --space names one (then checked)
            space = get_space(header["space"], **header["space_options"]) if not args.space else None
        space = space or get_space(args.space or "mbv2", **_options(args.space_option, "--space-option"))
        if args.genome:
            genome = _json_arg(args.genome, what="--genome", kind=list, error=InvalidGenomeError)
        else:
            genome = list(space.sample(np.random.default_rng(args.seed)))
            print(f"no --genome given: sampled {json.dumps(genome)} (seed {args.seed})", file=sys.stderr)
        candidate = Candidate.from_space(space, genome, hw)
    trained = None
    if args.supernet:
        if args.onnx:
            raise InvalidConfigError("--supernet gives a space's network its trained weights; it does not go with --onnx")
        from hwnas.accuracy.supernet import trained_subnet
        from hwnas.pipeline.artifacts import Trained

        target.hardware_space.validate(hw)
        check_out_dir(Path(args.out).resolve(), args.overwrite)
        space, model, data, origin = trained_subnet(args.supernet, space, candidate.genome,
                                                    finetune_epochs=args.finetune_epochs)
        from hwnas.accuracy.data import to_input

        target.calibrate_with(to_input(data.x_train[:64], space.input_shape(candidate.genome)).numpy())
        candidate = Candidate.from_space(space, candidate.genome, hw, weights=model.state_dict())
        trained = Trained(model=model, data=data, origin=origin)
    elif args.finetune_epochs:
        raise InvalidConfigError("--finetune-epochs needs --supernet NET.safetensors")
    target.hardware_space.validate(hw)  # before any slow work
    device = _remote_device(args)
    if device is not None:
        target.use_remote(device)  # an unreachable tracker or unknown key fails here, in one line
    target.cost_method(args.cost)
    if args.repeats is not None:
        if args.repeats < 1:
            raise InvalidConfigError(f"--repeats must be >= 1, got {args.repeats}")
        target.set_measure_options(repeats=args.repeats)
    check_out_dir(Path(args.out).resolve(), args.overwrite)  # before any slow work
    print(f"compiling for {target.spec} ...", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="hwnas-compile-") as work:  # the ONNX export, until it is bundled
        ev = evaluate(candidate, target, cost=args.cost, workdir=work)
        manifest = write_bundle(ev, args.out, overwrite=args.overwrite, trained=trained)
    arch = candidate.architecture()
    print(f"architecture: {arch.get('description') or arch.get('onnx')}")
    print(f"hardware:     {json.dumps(ev.hw)}")
    print(f"cost method:  {target.cost_method(args.cost)}" + (f" on {ev.device}" if ev.device else ""))
    for k, v in ev.metrics.items():
        print(f"  {k:16s} {_format_metric(k, v)}")
    if trained is not None:
        acc = json.loads(manifest.read_text())["accuracy"]
        if acc["measured"]:
            print(f"accuracy:     {acc['top1']:.2f} % top-1 of the compiled artifact on {acc['images']} test images "
                  f"(torch subnet {acc['torch_top1']:.2f} %, equal predictions {100 * acc['agreement_with_torch']:.2f} %)")
        else:
            print(f"accuracy:     not measured ({acc['reason']})")
        check = json.loads(manifest.read_text()).get("device_check")
        if check:
            from hwnas.cli.report import device_check_line

            print(f"device check: {device_check_line(check)}")
    print(f"bundle:       {manifest.parent}  (run: python {manifest.parent / 'run.py'})")
    over = overflows(ev.metrics, target.capacity())  # as the manifest says
    if over:
        what = ", ".join(f"{k} {v['value']:.1f} > {v['limit']:g}" for k, v in over.items())
        if args.allow_overflow:
            print(f"hwnas: warning: the network does not fit {target.spec} ({what}); bundle kept "
                  f"(--allow-overflow)", file=sys.stderr)
            return 0
        print(f"hwnas: error: the network does not fit {target.spec} ({what}): the bundle, marked \"fits\": false, "
              f"will not link on the device; pass --allow-overflow to accept it", file=sys.stderr)
        return 2
    return 0


def _remote_device(args):
    """The RPC device of ``--rpc-tracker``/``--rpc-key``, or None."""
    if args.rpc_tracker is None and args.rpc_key is None:
        return None
    if args.rpc_tracker is None:
        raise InvalidConfigError("--rpc-key needs --rpc-tracker HOST:PORT")
    from hwnas.targets.remote import RemoteDevice

    return RemoteDevice.parse(args.rpc_tracker, args.rpc_key, timeout_s=args.rpc_timeout)


def _options(pairs: Sequence[str] | None, what: str) -> dict:
    """``key=value`` pairs (values parsed as JSON when they are JSON) into a dict."""
    out = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidConfigError(f"{what} takes KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except ValueError:
            out[key.strip()] = value
    return out


def cmd_search(args) -> int:
    from hwnas.cli.report import write_report
    from hwnas.search.config import SearchConfig
    from hwnas.search.driver import Search
    from hwnas.search.objectives import apply_aggregate
    from hwnas.ir.runtime import host_cores

    objectives = apply_aggregate([o.strip() for o in args.objectives.split(",") if o.strip()], args.aggregate)
    config = SearchConfig(
        targets=tuple(args.target or ["cpu"]),
        space=None if args.onnx else (args.space or "mbv2"),
        space_options=_options(args.space_option, "--space-option"),
        onnx=str(Path(args.onnx).resolve()) if args.onnx else None,
        objectives=objectives,
        constraints=tuple(args.constraint or ()),
        formulation=args.formulation,
        surrogate=args.surrogate,
        equivalence=args.equivalence,
        budget=args.budget,
        accuracy=args.accuracy,
        accuracy_options=_options(args.accuracy_option, "--accuracy-option"),
        cost=args.cost,
        seed=args.seed,
        pop_size=args.pop_size,
        workers=host_cores() if args.workers is None else args.workers,
        timeout_s=args.timeout,
        repeats=args.repeats,
        weights=args.weights,
        top_k=args.top_k,
        ladder=args.ladder,
        executor=args.executor,
        cluster=args.cluster,
        rpc_tracker=args.rpc_tracker,
        rpc_key=args.rpc_key,
        rpc_timeout_s=args.rpc_timeout,
        plugins=tuple(str(Path(p).resolve()) if p.endswith(".py") else p for p in args.plugin or ()),
    )
    if args.onnx:
        from hwnas.ir.lower import load_onnx

        load_onnx(args.onnx)
    progress = Progress()
    search = Search(config, args.out, resume=args.resume, progress=progress)
    where = f"{config.executor} executor" + (f" at {config.cluster}" if config.cluster else "")
    remote = f", measured on rpc:{config.rpc_key}@{config.rpc_tracker}" if config.rpc_tracker else ""
    print(f"searching {config.space or config.onnx} x {', '.join(config.targets)}: {config.formulation}, "
          f"budget {config.budget}, {config.workers} worker(s), {where}{remote}; store {search.store_path}",
          file=sys.stderr)
    for spec, knobs in search.evaluator.fixed_knobs.items():
        print(f"{spec}: {', '.join(knobs)} held at their defaults: {search.evaluator.fixed_reason}", file=sys.stderr)
    try:
        front = search.run()
    except KeyboardInterrupt:
        progress.close()
        print(f"hwnas: interrupted; {search.evaluated} evaluations are in {search.store_path}; "
              f"continue with --resume", file=sys.stderr)
        return 130
    progress.close()
    files = write_report(args.out, artifacts=args.artifacts, finetune_epochs=args.finetune_epochs)
    print(f"{search.evaluated} points evaluated ({search.from_store} from the store), "
          f"{len(front)} on the Pareto front")
    if search.equivalent:
        graph = sum(1 for k in search.equivalent if k in search.aliases)
        print(f"{len(search.equivalent)} candidates computed the same function as an evaluated one "
              f"({len(search.equivalent) - graph} by the space's canonical genome, {graph} by the exported graph): "
              f"they took its result and cost no evaluation")
    if search.surrogate_generations:
        print(f"search overhead: {search.surrogate_seconds / search.surrogate_generations:.2f} s per generation "
              f"({search.surrogate_generations} generations; surrogate fit, screening, choice)")
    # with several targets, every target's value of each cost objective's metric
    shown = {t.label for t in search.objectives}
    extra = [f"{m}@{t.spec}" for m in dict.fromkeys(o.metric for o in search.objectives if o.metric != "accuracy")
             for t in search.evaluator.targets
             if len(config.targets) > 1 and m in t.metrics and f"{m}@{t.spec}" not in shown]
    rows = []
    for p in front[:15]:
        arch = search.evaluator.space.describe(p.genome) if search.evaluator.space else ""
        per_target = [p.metrics.get(label.split("@", 1)[1], {}).get(label.split("@", 1)[0]) for label in extra]
        rows.append([f"{p.value(t):.4g}" for t in search.objectives] +
                    ["-" if v is None else f"{v:.4g}" for v in per_target] + [arch[:60]])
    if rows:
        print(_table(rows, [t.label for t in search.objectives] + extra + ["architecture"]))
    if files.get("transfer_table") is not None:
        print(_transfer_summary(files["transfer_table"]))
    for rel, line in files.get("artifact_lines", {}).items():
        print(f"bundle {rel}: {line}")
    reused = tuned = 0
    not_as_configured: dict[str, int] = {}  # reason -> points whose kernels a schedule rule left unscheduled
    for row in search.store.evaluations(search.RUN_ID):
        reused += int(row.timings.get("tuning_reused", 0))
        tuned += int(row.timings.get("tuning_tuned", 0))
        for reason in {f"{u['pass']}: {u['error']}" for u in row.timings.get("unscheduled", ())}:
            not_as_configured[reason] = not_as_configured.get(reason, 0) + 1
    for reason, n in sorted(not_as_configured.items(), key=lambda kv: -kv[1]):
        print(f"not as configured: {n} point(s) have kernels a schedule rule left unscheduled ({reason}); "
              f"their figures are those of the code compiled", file=sys.stderr)
    if reused + tuned:
        print(f"tuned schedules: {reused + tuned} kernels compiled with tuned schedules, {reused} reused from "
              f"the tuning database ({100 * reused / (reused + tuned):.0f} % reuse), {tuned} tuned in this run")
    if config.ladder is not None:
        from hwnas.cli.report import ladder_rows

        lrows = ladder_rows(search.all_points(), search.repriced(), search.objectives, config.ladder,
                            config.cost or "default")
        errs = sorted(abs(r["rel_err"]) for r in lrows if r["rel_err"] is not None)
        bad = [r for r in lrows if r["disagree"]]
        median = f"{100 * errs[len(errs) // 2]:.1f} %" if errs else "-"
        print(f"cost ladder: {len({r['key'] for r in lrows})} front points re-priced with {config.ladder}; median "
              f"|{config.cost or 'default'} - {config.ladder}| {median}; {len(bad)} of {len(lrows)} value(s) differ by "
              f"more than 10 % (disagreement rate {100 * len(bad) / max(len(lrows), 1):.0f} %; listed in the report)")
    print(f"report: {files['html']}")
    return 0


def _transfer_summary(transfer) -> str:
    """The transfer table as text: a row per target's best architecture, a column per target."""
    specs = transfer["targets"]
    by = {(c["best_for"], c["on"]): c for c in transfer["cells"]}
    rows = []
    for a in specs:
        genome = by[(a, specs[0])]["genome"]
        row = [f"best for {a}", "-" if genome is None else json.dumps(genome)]
        for b in specs:
            c = by[(a, b)]
            row.append(c["error"] or "-" if c["value"] is None else
                       f"{c['value']:.4g} x{c['ratio']:.3g} #{c['rank']}/{c['of']}{'' if c['run'] == 'search' else '*'}"
                       f"{'' if c['feasible'] else ' infeasible'}")
        rows.append(row)
    return (f"transfer ({transfer['metric']}; best for a target: the {transfer['rule']}; on target B with the hardware "
            f"of B's best; x ratio to B's best, #rank; * evaluated for this table):\n"
            + _table(rows, ["", "genome"] + [f"on {b}" for b in specs]))


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise InvalidConfigError(f"{out} exists; pass --overwrite to replace it")


def cmd_predictor_train(args) -> int:
    from hwnas.arch import get_space
    from hwnas.pipeline import predictor
    from hwnas.targets import get_target
    from hwnas.cost.predictor import LatencyPredictor

    target = get_target(args.target)
    space = get_space(args.space)
    if args.samples < 5:
        raise InvalidConfigError(f"--samples must be >= 5, got {args.samples}")
    if args.kind not in LatencyPredictor.KINDS:
        raise InvalidConfigError(f"unknown --kind {args.kind!r}; known: {', '.join(LatencyPredictor.KINDS)}")
    if not target.trained_cost_methods:
        raise InvalidConfigError(f"target {target.spec} takes no trained predictor; its cost methods: "
                                 f"{', '.join(target.cost_methods)}")
    target.cost_method(target.reference_method)  # e.g. measure without the device: one line, before any work
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        out.parent.mkdir(parents=True, exist_ok=True)
    candidates = predictor.sample_candidates(space, target, args.samples, args.seed)
    progress = Counter(f"pricing by {target.reference_method} on {target.spec}")
    samples = predictor.collect(space, target, candidates, progress=progress)
    progress.close()
    model = predictor.train(samples, kind=args.kind, seed=args.seed, target=target, space_name=space.name)
    model.save(out)
    h = model.metadata["holdout"]
    print(f"{len(samples)} of {len(candidates)} candidates measured on {target.spec}; {args.kind} predictor "
          f"saved to {out}")
    print(f"held-out error ({h['n']} networks): MAPE {h['mape_pct']:.1f} %, within +-10 % "
          f"{100 * h['within_10pct']:.0f} %, Kendall tau {h['kendall_tau']:.3f}, Spearman rho "
          f"{h['spearman_rho']:.3f}")
    print(f"use it with: hwnas search --target {target.spec} --cost {target.trained_cost_methods[0]}:{out} ...")
    return 0


def cmd_predictor_build(args) -> int:
    import time

    from hwnas.pipeline import kernel_set
    from hwnas.pipeline.store import ResultStore
    from hwnas.targets import get_target

    target = get_target(args.target)
    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    store_path = Path(args.store or out.with_suffix(".kernels.db"))
    store = ResultStore(store_path)
    line = Counter(f"kernels for {target.spec}")
    started = time.monotonic()

    def show(state) -> None:
        err = ("held-out error: -" if state["within_10pct"] is None else
               f"held-out: {100 * state['within_10pct']:.0f} % within +-10 % ({100 * state['time_within_10pct']:.0f} % "
               f"of their time), MAPE {state['mape_pct']:.1f} %")
        line.label = (f"{state['measured']} kernels timed ({state['resumed']} resumed), pool {state['pool']}, "
                      f"{state['whole']} networks whole; {err}")
        line(min(int(time.monotonic() - started), int(60 * args.minutes)), int(60 * args.minutes))

    model = kernel_set.build(target, store, minutes=args.minutes, error_target=args.error_target, seed=args.seed,
                             progress=show)
    line.close()
    model.save(out)
    h = model.metadata["heldout"]
    print(f"kernel predictor of {target.spec} from {model.metadata['kernels']} kernels saved to {out} (kernel set: "
          f"{store_path}); held-out kernels ({h['n']}): {100 * h['within_10pct']:.0f} % within +-10 % "
          f"({100 * h['time_within_10pct']:.0f} % of their time), "
          f"MAPE {h['mape_pct']:.1f} %")
    for threads, w in model.metadata["whole_networks"].items():
        print(f"  {threads} thread(s): traffic term fitted on {w['networks']} networks measured whole: "
              f"{100 * w['sum_rule_within_10pct']:.0f} % within +-10 % by the sum rule alone, "
              f"{100 * w['fitted_within_10pct']:.0f} % with it")
    print(f"use it with: hwnas search --target {target.spec} --cost predictor:{out} --ladder measure ...")
    return 0


def cmd_predictor_fewshot(args) -> int:
    from hwnas.cost import fewshot

    out = Path(args.out)
    _refuse_existing(out, args.overwrite)
    shots = fewshot.read_shots(args.shots, args.space)
    model = fewshot.fit(args.space, shots, method=args.method, name=args.name)
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    print(f"few-shot model of {args.name} ({args.space}, {args.method}) from {len(shots)} shots saved to {out}; "
          f"{model.summary()}")
    print(f"use it with: hwnas predictor predict --model {out} --archs ARCHS.csv --out PRED.csv, or "
          f"hwnas search --space {args.space} --target published:fewshot --cost fewshot:{out} ...")
    return 0


def cmd_predictor_predict(args) -> int:
    import csv

    from hwnas.cost import fewshot

    model = fewshot.FewShotModel.load(args.model)
    genomes = fewshot.read_archs(args.archs, model.space)
    ms = model.predict(genomes) if genomes else []
    out = Path(args.out)
    if not out.parent.exists() and str(out.parent) not in ("", "."):
        out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["arch", "latency_ms"])
        for genome, value in zip(genomes, ms):
            writer.writerow([fewshot.format_arch(model.space, genome), f"{float(value):.6g}"])
    print(f"{len(genomes)} latencies of {model.name} ({model.space}) written to {out}")
    return 0


def cmd_supernet_train(args) -> int:
    from hwnas.accuracy.supernet import Schedule, checkpoint_path, train_supernet
    from hwnas.arch import get_space
    from hwnas.cli.progress import TrainLine

    space = get_space(args.space, **_options(args.space_option, "--space-option"))
    defaults = Schedule()
    schedule = Schedule(epochs=args.epochs, batch_size=args.batch_size or defaults.batch_size,
                        lr=args.lr or defaults.lr, seed=args.seed)
    out = Path(args.out)
    if out.suffix != ".safetensors":
        raise InvalidConfigError(f"--out must name a .safetensors file, got {args.out}")
    line = TrainLine()
    print(f"training the {space.name} supernet on {args.data} for {args.epochs} epoch(s) (sandwich rule, in-place "
          f"distillation); checkpoint {checkpoint_path(out)} after every epoch", file=sys.stderr)
    try:
        header = train_supernet(space, args.data, out=out, schedule=schedule, resume=args.resume, device=args.device,
                                progress=line, threads=args.threads)
    except KeyboardInterrupt:
        line.close()
        print(f"hwnas: interrupted; continue with --resume (from {checkpoint_path(out)})", file=sys.stderr)
        return 130
    line.close()
    last = header["history"][-1] if header["history"] else {}
    ran = header.get("train_s_this_run")
    print(f"supernet: {out} ({header['epochs_done']} epochs on {header['data_spec']}, "
          + ("trained before: nothing to do" if header.get("cached") else f"{ran:.0f} s in this run")
          + f"); held-out top-1: largest {last.get('largest_acc', float('nan')):.2f} %, "
          f"smallest {last.get('smallest_acc', float('nan')):.2f} %")
    print(f"use it with: hwnas search --space {space.name} --accuracy supernet:{out} ...")
    return 0


def cmd_bench_cost_models(args) -> int:
    from hwnas.cli import bench

    out = Path(args.out or f"runs/bench-cost-models-{args.space}")
    progress = Counter("pricing candidates")
    result = bench.cost_models(space_name=args.space, target_spec=args.target, n=args.n, seed=args.seed, out=out,
                               search_budget=args.search_budget, progress=progress, kernel_model=args.kernel_model)
    progress.close()
    print(bench.format_table(result))
    print(f"wrote {out / 'cost_models.csv'}, {out / 'cost_models.json'}, {out / 'cost_models.png'} "
          f"({result['wall_s'] / 60:.1f} min)")
    return 0


def cmd_rpc_tracker(args) -> int:
    import signal
    import time

    from hwnas.targets.remote import start_tracker

    tracker = start_tracker(args.host, args.port)
    print(f"RPC tracker listening on {args.host}:{tracker.port} (Ctrl-C stops it)", flush=True)
    return _serve(tracker, signal, time)


def cmd_rpc_server(args) -> int:
    import signal
    import time

    from hwnas.targets.remote import start_server

    server = start_server(args.tracker, args.key, host=args.host, port=args.port)
    print(f"RPC server for key {args.key} listening on {args.host}:{server.port}, registered at {args.tracker} "
          f"(Ctrl-C stops it)", flush=True)
    return _serve(server, signal, time)


def _serve(service, signal, time) -> int:
    """Wait until ``service`` (a TVM tracker or server process) ends or this process is told to stop."""
    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        while service.proc.is_alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        try:
            service.terminate()
        except OSError:  # it stopped already
            if service.proc is not None:
                service.proc.kill()
    return 0


def cmd_rpc_status(args) -> int:
    from hwnas.targets.remote import RemoteDevice, parse_address

    host, port = parse_address(args.tracker, "--tracker")
    keys = RemoteDevice(host, port, "any", timeout_s=args.timeout).keys()
    rows = [(k, str(v["servers"]), str(v["free"]), str(v["pending"])) for k, v in sorted(keys.items())]
    print(_table(rows, ("key", "servers", "free", "pending")) if rows else f"no servers registered at {args.tracker}")
    return 0


def cmd_report(args) -> int:
    from hwnas.cli.report import write_report

    files = write_report(args.run, artifacts=args.artifacts)
    print(f"report: {files['html']}")
    return 0


def _rpc_options(p) -> None:
    p.add_argument("--rpc-tracker", metavar="HOST:PORT",
                   help="measure on a device reached through this TVM RPC tracker (see `hwnas rpc`)")
    p.add_argument("--rpc-key", metavar="KEY", help="the device key its server registered with")
    p.add_argument("--rpc-timeout", type=float, default=60.0,
                   help="seconds to reach the tracker and to wait for a free device (default 60)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwnas", description="hardware-aware neural architecture search through Apache TVM")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("targets", help="list the targets, their metrics and hardware knobs")
    p.set_defaults(func=cmd_targets)

    p = sub.add_parser("spaces", help="list the architecture search spaces")
    p.set_defaults(func=cmd_spaces)

    p = sub.add_parser("compile", help="compile one candidate, cost it, and write a deployable bundle")
    p.add_argument("--space", help="architecture space (default mbv2 unless --onnx)")
    p.add_argument("--genome", help="JSON list of ints (default: a genome sampled with --seed)")
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE", help="space option, e.g. resolutions=[32]")
    p.add_argument("--supernet", metavar="NET.safetensors",
                   help="compile the subnet with the weights of this trained supernet (its space unless --space); "
                        "the manifest records the compiled artifact's test accuracy")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="with --supernet: train the subnet alone for this many epochs first (default 0)")
    p.add_argument("--onnx", help="your own ONNX model instead of a space: only the hardware is searched")
    p.add_argument("--target", default="cpu", help="target (default cpu); see `hwnas targets`")
    p.add_argument("--hw", help="JSON object of hardware knobs; missing knobs take their defaults")
    p.add_argument("--cost", help="cost method (default: the target's first)")
    p.add_argument("--repeats", type=int, help="measurement repeats (default 10)")
    _rpc_options(p)
    p.add_argument("--seed", type=int, default=0, help="seed for a sampled genome (default 0)")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")
    p.add_argument("--allow-overflow", action="store_true",
                   help="exit 0 although the network exceeds the device's memory (e.g. an MCU's SRAM or flash); "
                        "without it such a compile writes the bundle marked \"fits\": false and exits 2")
    p.set_defaults(func=cmd_compile)

    add_tune_parser(sub)

    p = sub.add_parser("search", help="search architectures and hardware configs jointly")
    p.add_argument("--space", help="architecture space (default mbv2 unless --onnx)")
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE", help="space option, e.g. num_classes=10")
    p.add_argument("--onnx", help="your own ONNX model: only the hardware is searched")
    p.add_argument("--target", action="append", help="target (repeatable; default cpu)")
    p.add_argument("--objectives", default="accuracy,latency_ms",
                   help="comma-separated metrics (default accuracy,latency_ms); metric@target names one target, "
                        "metric@worst or metric@geomean aggregates over the targets (see --aggregate)")
    p.add_argument("--aggregate", default="none", metavar="none|worst|geomean",
                   help="with several targets, how each cost objective named without @target is taken: none "
                        "(default: one objective per target), worst (the largest over the targets of value / "
                        "the reference network's value on that target) or geomean (geometric mean of those "
                        "quotients); metric@worst or metric@geomean in --objectives chooses per objective")
    p.add_argument("--constraint", action="append", metavar="METRIC<=VALUE", help="e.g. latency_ms<=5 (repeatable)")
    p.add_argument("--formulation", default="nsga2", help="nsga2 (default), constrained, scalarized, two-stage, fit-first (MCUNet: narrow to what fits, then NSGA-II), random")
    p.add_argument("--surrogate", default="ehvi",
                   help="nsga2: ehvi (default: a Gaussian process (the accuracy) and a bootstrap ensemble (the "
                        "costs and constraints) fitted on the canonical points evaluated so far predict the whole "
                        "space, or a large pool around the front, and each batch takes the largest predicted "
                        "hypervolume improvements over the space's median network; after a batch that gained nothing, one "
                        "pick goes to the accurate networks beyond the median cost), xgb (the ensemble screens NSGA-II's "
                        "offspring) or none (plain NSGA-II)")
    p.add_argument("--equivalence", default="graph",
                   help="which candidates are one point, evaluated once (the others take its result and cost no "
                        "evaluation): graph (default: one canonical genome (nb201: the live edges), or, on a target "
                        "that compiles, one exported graph with dead code, names, node order and weight values left "
                        "out, and one hardware config) or genome (one canonical genome and hardware config only)")
    p.add_argument("--budget", type=int, default=50, help="points to evaluate (default 50)")
    p.add_argument("--pop-size", type=int, default=16, help="population per generation (default 16)")
    p.add_argument("--accuracy", default="proxy",
                   help="supernet:NET.safetensors (see `hwnas supernet train`), table[:dataset], train[:data.npz] or "
                        "proxy[:synflow|naswot] (default proxy)")
    p.add_argument("--accuracy-option", action="append", metavar="KEY=VALUE", help="e.g. max_steps=50")
    p.add_argument("--cost", help="cost method (default: each target's first)")
    p.add_argument("--ladder", metavar="METHOD",
                   help="cost ladder: price every candidate with --cost (e.g. lut, analytical, predictor:M.json) and "
                        "re-price each generation's front with METHOD (e.g. measure); the report shows where they "
                        "disagree")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, help="evaluation processes (default: cores; 0 = in this process)")
    p.add_argument("--executor", default="process", choices=None, metavar="{process,dask,ray}",
                   help="where evaluations run: process (default: worker processes here), dask or ray (a local "
                        "cluster of --workers workers, or the one at --cluster; pip install 'hwnas[dask]' / "
                        "'hwnas[ray]')")
    p.add_argument("--cluster", metavar="ADDRESS",
                   help="a running cluster: Dask scheduler (tcp://host:8786) or Ray (ray://host:10001, auto)")
    _rpc_options(p)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per candidate (default 600)")
    p.add_argument("--repeats", type=int, help="measurement repeats")
    p.add_argument("--weights", type=int, default=5, help="scalarized: number of weights (default 5)")
    p.add_argument("--top-k", type=int, default=4, help="two-stage: architectures whose hardware is searched")
    p.add_argument("--plugin", action="append", help="module or .py file to import first (registers targets)")
    p.add_argument("--artifacts", type=int, default=3, help="compile bundles for this many front points (default 3)")
    p.add_argument("--finetune-epochs", type=int, default=0,
                   help="--accuracy supernet:NET: train each bundled subnet alone this many epochs first (default 0)")
    p.add_argument("--out", required=True, help="run folder (results.db, pareto.csv/png, report.html, artifacts/)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("predictor", help="learned latency predictors")
    psub = p.add_subparsers(dest="predictor_command", required=True, parser_class=_Parser)
    p = psub.add_parser("train", help="measure sampled candidates, train a predictor, save it with its metadata")
    p.add_argument("--target", default="cpu", help="target to measure on (default cpu)")
    p.add_argument("--space", default="mbv2", help="architecture space to sample (default mbv2)")
    p.add_argument("--samples", type=int, default=100, help="candidates to measure (default 100)")
    p.add_argument("--kind", default="xgb", help="xgb (bootstrap XGBoost ensemble, default) or mlp (torch MLPs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_predictor_train)
    p = psub.add_parser("build", help="time kernels alone (adaptive sampling) and fit a kernel-level latency "
                                      "predictor of the target; resumes from its kernel set")
    p.add_argument("--target", default="cpu", help="target whose kernels are timed (default cpu)")
    p.add_argument("--minutes", type=float, default=20.0, help="time budget (default 20)")
    p.add_argument("--error-target", type=float, default=0.95,
                   help="stop early when this share of held-out kernels is within +-10 %% (default 0.95)")
    p.add_argument("--store", help="results store holding the kernel set (default OUT with .kernels.db); "
                                   "a search's results.db works too: its lookup-table kernels are reused")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_predictor_build)
    p = psub.add_parser("fewshot", help="fit a latency model of a device you do not own from a few measured "
                                        "architectures (the published devices are the prior)")
    p.add_argument("--space", required=True, choices=("nb201", "fbnet"), help="architecture space of the shots")
    p.add_argument("--shots", required=True, help="CSV with columns arch,latency_ms (at least 3 rows)")
    p.add_argument("--method", default="blend",
                   choices=("nearest", "transfer", "anchored", "ensemble", "mix", "cost", "mix-cost", "blend"),
                   help="how the prior and the architecture are used (default blend; see README)")
    p.add_argument("--name", default="fewshot", help="the device's name, recorded in the model")
    p.add_argument("--out", required=True, help="model file to write (JSON)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    p.set_defaults(func=cmd_predictor_fewshot)
    p = psub.add_parser("predict", help="latency of architectures from a few-shot model")
    p.add_argument("--model", required=True, help="model file of `hwnas predictor fewshot`")
    p.add_argument("--archs", required=True, help="CSV with the column arch")
    p.add_argument("--out", required=True, help="CSV to write: arch,latency_ms")
    p.set_defaults(func=cmd_predictor_predict)

    p = sub.add_parser("supernet", help="weight-sharing supernets: train once, rank subnets in seconds")
    ssub = p.add_subparsers(dest="supernet_command", required=True, parser_class=_Parser)
    p = ssub.add_parser("train", help="train a space's supernet on your data (sandwich rule, in-place distillation)")
    p.add_argument("--space", default="mbv2", help="architecture space (default mbv2)")
    p.add_argument("--space-option", action="append", metavar="KEY=VALUE",
                   help="space option, e.g. resolutions=[32] (a search with this supernet must use the same)")
    p.add_argument("--data", default="digits",
                   help="digits (default), PATH.npz, cifar10:DIR, cifar100:DIR or imagefolder:DIR")
    p.add_argument("--epochs", type=int, default=4, help="epochs (default 4)")
    p.add_argument("--batch-size", type=int, help="images per step (default 64)")
    p.add_argument("--lr", type=float, help="peak learning rate of the cosine schedule (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when torch sees one, else cpu")
    p.add_argument("--threads", type=int, help="torch threads (default: one per core; 1 is faster on a busy machine)")
    p.add_argument("--out", required=True, help="the supernet file to write (.safetensors)")
    p.add_argument("--resume", action="store_true",
                   help="continue from the last epoch's checkpoint; a finished --out with these settings returns at once")
    p.set_defaults(func=cmd_supernet_train)

    p = sub.add_parser("bench", help="benchmarks run through hwnas itself")
    bsub = p.add_subparsers(dest="bench_command", required=True, parser_class=_Parser)
    p = bsub.add_parser("cost-models", help="a target's cost methods (and its predictors, if it trains any) "
                                           "against its reference method on the same networks")
    p.add_argument("--space", default="nb201", help="architecture space (default nb201), or several separated by "
                                                    "commas (mbv2,fbnet,nb201: candidates drawn in turn)")
    p.add_argument("--target", default="cpu", help="target (default cpu)")
    p.add_argument("--n", type=int, default=300, help="candidates to compile and price (default 300)")
    p.add_argument("--search-budget", type=int, default=24, help="points of the search run with each method "
                                                                 "(0: no searches)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="folder for cost_models.csv/json/png (default runs/bench-cost-models-SPACE)")
    p.add_argument("--kernel-model", help="also judge this kernel predictor (hwnas predictor build), with the "
                                          "noise floor: each candidate measured twice")
    p.set_defaults(func=cmd_bench_cost_models)

    p = sub.add_parser("rpc", help="TVM RPC tracker and servers for measuring on other devices")
    rsub = p.add_subparsers(dest="rpc_command", required=True, parser_class=_Parser)
    p = rsub.add_parser("tracker", help="run an RPC tracker (binds 127.0.0.1 unless --host says otherwise)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=9190, help="port (default 9190)")
    p.set_defaults(func=cmd_rpc_tracker)
    p = rsub.add_parser("server", help="run an RPC server on this device, registered at a tracker under a key")
    p.add_argument("--tracker", required=True, metavar="HOST:PORT", help="the tracker to register with")
    p.add_argument("--key", required=True, help="the device key searches ask for (--rpc-key)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; the server runs whatever it is sent: expose it "
                        "on trusted networks only)")
    p.add_argument("--port", type=int, default=9090, help="port (default 9090)")
    p.set_defaults(func=cmd_rpc_server)
    p = rsub.add_parser("status", help="the device keys registered at a tracker: servers, free, pending")
    p.add_argument("--tracker", required=True, metavar="HOST:PORT")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to reach the tracker (default 10)")
    p.set_defaults(func=cmd_rpc_status)

    p = sub.add_parser("report", help="rebuild a search's report from its store")
    p.add_argument("run", help="the search's --out folder")
    p.add_argument("--artifacts", type=int, default=0, help="also compile bundles for this many front points")
    p.set_defaults(func=cmd_report)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return args.func(args)
    except HwnasError as exc:
        print(f"hwnas: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("hwnas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
