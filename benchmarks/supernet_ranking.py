"""Does a weight-sharing supernet rank subnets as training them alone would?

    python benchmarks/supernet_ranking.py --data digits --epochs 6 --n 12
    python benchmarks/supernet_ranking.py --data cifar10:~/data/cifar-10-batches-py --device cuda --epochs 30

Trains the space's supernet once (``hwnas supernet train``'s schedule: sandwich rule, in-place distillation),
picks ``--n`` subnets spread over the space (sampled genomes sorted by parameter count, taken at even
quantiles, the largest and smallest included), scores each with inherited weights (batch norm recalibrated),
trains each alone from scratch with the same schedule (same epochs, batch, learning rate, cosine decay, label
smoothing; labels only) and prints: Kendall tau and Spearman rho between inherited and stand-alone accuracy,
the mean gap, the supernet's training time against the K stand-alone trainings, and the time per candidate
evaluation with inherited weights. ``--standalone-seeds S`` trains each stand-alone network S times and
ranks against the mean; with S >= 2 it also prints the reference's own consistency (Kendall tau between the
first two seeds' stand-alone accuracies): no ranking can be expected to agree with one stand-alone run more
than a second stand-alone run does. ``--json`` writes everything.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hwnas.accuracy.data import data_option, image_data  # noqa: E402
from hwnas.accuracy.supernet import (  # noqa: E402
    SPLIT_SEED, TEST_FRACTION, Schedule, count_correct, inherited_accuracy, load_supernet, train_subnet,
    train_supernet)
from hwnas.arch import get_space  # noqa: E402


def kendall_tau(a, b) -> float:
    """Kendall's tau-b."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    conc = disc = ties_a = ties_b = 0
    for i in range(len(a)):
        for j in range(i + 1, len(a)):
            da, db = np.sign(a[i] - a[j]), np.sign(b[i] - b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                conc += 1
            else:
                disc += 1
    n0 = conc + disc
    return (conc - disc) / np.sqrt((n0 + ties_a) * (n0 + ties_b)) if n0 else float("nan")


def spearman(a, b) -> float:
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def spread_genomes(space, n: int, seed: int, largest, smallest) -> list[tuple[int, ...]]:
    """``n`` genomes at even quantiles of the parameter count among 40 n samples (largest, smallest included)."""
    rng = np.random.default_rng(seed)
    pool = {space.sample(rng) for _ in range(40 * n)}
    with torch.device("meta"):
        sized = sorted((sum(p.numel() for p in space._build(g).parameters()), g) for g in pool)
    picks = [sized[round(q)][1] for q in np.linspace(0, len(sized) - 1, n - 2)]
    out = [tuple(smallest), *picks, tuple(largest)]
    return list(dict.fromkeys(out))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--space", default="mbv2")
    ap.add_argument("--space-option", action="append", default=None, metavar="KEY=JSON",
                    help="default for mbv2: resolutions=[32] widths=[0.25,0.5] (the demo's)")
    ap.add_argument("--data", default="digits", help="digits, PATH.npz, cifar10:DIR, cifar100:DIR, imagefolder:DIR")
    ap.add_argument("--epochs", type=int, default=6, help="epochs of the supernet and of every stand-alone network")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--n", type=int, default=12, help="subnets trained stand-alone (default 12)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--standalone-seeds", type=int, default=1,
                    help="train each stand-alone network this many times (seeds seed, seed+1, ...); the reference is "
                         "their mean, and with 2 or more the table adds the reference's own consistency: Kendall "
                         "tau between the first two seeds' stand-alone accuracies (the ceiling any ranking can "
                         "reach against one stand-alone run)")
    ap.add_argument("--device", default=None, help="cpu or cuda (default: cuda when present)")
    ap.add_argument("--threads", type=int, help="torch threads (default: one per core)")
    ap.add_argument("--supernet", help="an already trained supernet file (its training time is then not measured)")
    ap.add_argument("--work", default="runs/bench-supernet", help="folder for the supernet file")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args()
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.space_option is None:
        args.space_option = ["resolutions=[32]", "widths=[0.25,0.5]"] if args.space == "mbv2" else []
    options = {k: json.loads(v) for k, _, v in (o.partition("=") for o in args.space_option)}
    space = get_space(args.space, **options)
    schedule = Schedule(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    data = image_data(data_option("benchmark", args.data), split_seed=SPLIT_SEED, test_fraction=TEST_FRACTION)

    t0 = time.perf_counter()
    if args.supernet:
        path, super_s = Path(args.supernet), None
    else:
        path = Path(args.work) / f"{args.space}-{args.data.replace(':', '_').replace('/', '_')}-e{args.epochs}.safetensors"
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in (path, path.with_name(path.name.replace(".safetensors", ".ckpt.safetensors"))):
            old.unlink(missing_ok=True)
        train_supernet(space, args.data, out=path, schedule=schedule, device=device,
                       progress=lambda i: i.get("epoch_done") and print(
                           f"  supernet epoch {i['epoch']}: largest {i['largest_acc']:.1f} %, smallest "
                           f"{i['smallest_acc']:.1f} %", flush=True))
        super_s = time.perf_counter() - t0
    net, data, _ = load_supernet(path, space)
    net.to(device)
    genomes = spread_genomes(space, args.n, args.seed, net.largest, net.smallest)

    rows = []
    for i, g in enumerate(genomes):
        t = time.perf_counter()
        inherited = inherited_accuracy(net, g, data, bn_images=schedule.bn_images, seed=schedule.seed, device=device)
        eval_s = time.perf_counter() - t
        t = time.perf_counter()
        alone_runs = []
        for k in range(args.standalone_seeds):
            model = space.build(g, seed=args.seed + k)
            train_subnet(model, data, space.input_shape(g), epochs=schedule.epochs, lr=schedule.lr,
                         batch_size=schedule.batch_size, seed=schedule.seed + k,
                         label_smoothing=schedule.label_smoothing, weight_decay=schedule.weight_decay,
                         bn_images=schedule.bn_images, device=device)
            alone_runs.append(100.0 * count_correct(model, data, space.input_shape(g)) / len(data.y_test))
        alone = float(np.mean(alone_runs))
        train_s = (time.perf_counter() - t) / args.standalone_seeds  # one training, against the supernet's one
        params = sum(p.numel() for p in model.parameters())
        rows.append({"genome": list(g), "params": params, "inherited": inherited, "standalone": alone,
                     "standalone_runs": alone_runs,
                     "eval_s": eval_s, "train_s": train_s, "description": space.describe(g)})
        print(f"  {i + 1}/{len(genomes)} {space.describe(g)[:60]}: inherited {inherited:.2f} %, stand-alone "
              f"{alone:.2f} % {'(' + ', '.join(f'{a:.2f}' for a in alone_runs) + ') ' if len(alone_runs) > 1 else ''}"
              f"({train_s:.1f} s)", flush=True)

    inh = [r["inherited"] for r in rows]
    alone = [r["standalone"] for r in rows]
    result = {
        "space": args.space, "space_options": options, "data": args.data, "device": device,
        "schedule": schedule.__dict__, "n": len(rows), "rows": rows,
        "kendall_tau": kendall_tau(inh, alone), "spearman_rho": spearman(inh, alone),
        "standalone_seeds": args.standalone_seeds,
        "standalone_self_tau": (kendall_tau([r["standalone_runs"][0] for r in rows],
                                            [r["standalone_runs"][1] for r in rows])
                                if args.standalone_seeds > 1 else None),
        "mean_gap": float(np.mean(np.subtract(alone, inh))),
        "mean_abs_gap": float(np.mean(np.abs(np.subtract(alone, inh)))),
        "supernet_train_s": super_s, "standalone_train_s": float(sum(r["train_s"] for r in rows)),
        "eval_s_median": float(np.median([r["eval_s"] for r in rows])),
        "threads": torch.get_num_threads(),
    }
    print()
    print("| space | data | device | epochs | K | stand-alone seeds | Kendall tau | Spearman rho | "
          "stand-alone seed 1 vs seed 2 tau | mean gap (alone - inherited) | supernet train s | K stand-alone s | "
          "ratio | s per candidate (inherited) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    self_tau = "-" if result["standalone_self_tau"] is None else f"{result['standalone_self_tau']:.3f}"
    ratio = (f"{result['standalone_train_s'] / super_s:.2f}x" if super_s else "-")
    print(f"| {args.space} {json.dumps(options)} | {args.data} | {device} | {args.epochs} | {len(rows)} | "
          f"{args.standalone_seeds} | {result['kendall_tau']:.3f} | {result['spearman_rho']:.3f} | {self_tau} | "
          f"{result['mean_gap']:+.2f} points "
          f"(|gap| {result['mean_abs_gap']:.2f}) | {super_s if super_s is None else round(super_s, 1)} | "
          f"{result['standalone_train_s']:.1f} | {ratio} | {result['eval_s_median']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
