"""Few-shot latency on a device left out of the prior (HELP's setting), every method and the baseline.

For each shipped device column of nb201/latency.csv and fbnet/latency.csv:
leave the column out of the prior, draw K measured architectures of it as
shots (K in --shots, --seeds draws each), fit each few-shot method
(:mod:`hwnas.cost.fewshot`) and rank every architecture of the table; print
the median over seeds of Kendall tau and Spearman rho against the column.

* ``baseline``: the single shipped device column most correlated (Kendall)
  with the shots, read from the table as shipped (the issue's baseline);
* ``nearest``, ``transfer``, ``anchored``, ``ensemble``, ``mix``, ``cost``,
  ``mix-cost``, ``blend``: the methods of ``hwnas predictor fewshot --method``
  (blend is the default);
* ``ceiling``: the better of least squares in log ms over ``[z, one-hot]``
  and ``mix-cost``, fitted on half the table (thousands of "shots") and
  scored on the other half: what these linear models reach with unlimited
  shots (not a few-shot method).

The summary gives, per method, the median tau over columns, on how many
columns it is ahead of the baseline, and its worst margin to the baseline.

    python benchmarks/fewshot_latency.py [--space nb201 fbnet] [--shots 5 10 20 50] [--seeds 5]

Needs the published data (``../shared/data``, see hwnas.data). Pure data, no timing.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("--space", nargs="+", default=["nb201", "fbnet"])
parser.add_argument("--shots", nargs="+", type=int, default=[5, 10, 20, 50])
parser.add_argument("--seeds", type=int, default=5)
args = parser.parse_args()

from scipy.stats import kendalltau, spearmanr  # noqa: E402

from hwnas.cost import fewshot  # noqa: E402

GOALS = {10: 0.90, 20: 0.92}


def baseline(log_ms: np.ndarray, prior_cols: list[int], idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    taus = [kendalltau(log_ms[idx, c], y)[0] for c in prior_cols]
    return log_ms[:, prior_cols[int(np.nanargmax(np.nan_to_num(taus, nan=-2.0)))]]


def ceiling(inputs: fewshot.Inputs, y: np.ndarray, rng) -> tuple[float, float]:
    """The better of least squares in log ms over ``[z, one-hot]`` and ``mix-cost``, fitted on half the table."""
    x = np.hstack([np.ones((len(y), 1)), inputs.x])
    perm = rng.permutation(len(y))
    train, test = perm[: len(y) // 2], perm[len(y) // 2:]
    w = np.linalg.lstsq(x[train], y[train], rcond=None)[0]
    fits = [x[test] @ w, fewshot.predict_terms(fewshot.fit_terms(inputs.rows(train), y[train], "mix-cost"),
                                                inputs.rows(test))]
    return max((kendalltau(p, y[test])[0], spearmanr(p, y[test])[0]) for p in fits)


started = time.perf_counter()
methods = ["baseline", *fewshot.METHODS]
summary = []
for space in args.space:
    prior = fewshot.load_prior(space)
    n = len(prior.genomes)
    res: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    ceil: dict[str, tuple[float, float]] = {}
    for j, device in enumerate(prior.devices):
        y = prior.log_ms[:, j]
        others = [c for c in range(len(prior.devices)) if c != j]
        devices = tuple(prior.devices[c] for c in others)
        inputs = prior.inputs(prior.genomes, devices)
        ceil[device] = ceiling(inputs, y, np.random.default_rng(0))
        for k in args.shots:
            for seed in range(args.seeds):
                idx = np.random.default_rng(1000 * seed + k).choice(n, size=k, replace=False)
                preds = {"baseline": baseline(prior.log_ms, others, idx, y[idx])}
                for m in fewshot.METHODS:
                    preds[m] = fewshot.predict_terms(fewshot.fit_terms(inputs.rows(idx), y[idx], m), inputs)
                for m, p in preds.items():
                    res.setdefault((device, k, m), []).append((kendalltau(p, y)[0], spearmanr(p, y)[0]))
    for k in args.shots:
        print(f"\n{space}: leave-one-device-out, K = {k} shots, median over {args.seeds} seeds "
              f"(Kendall tau / Spearman rho over all {n} table architectures)")
        head = f"{'device':10s}" + "".join(f"{m:>14s}" for m in methods) + f"{'ceiling':>14s}"
        print(head)
        print("-" * len(head))
        meds = {m: [] for m in methods}
        for device in prior.devices:
            row = f"{device:10s}"
            for m in methods:
                tau = float(np.median([t for t, _ in res[(device, k, m)]]))
                rho = float(np.median([r for _, r in res[(device, k, m)]]))
                meds[m].append((tau, rho))
                row += f"{tau:>8.3f}/{rho:.3f}"
            row += f"{ceil[device][0]:>8.3f}/{ceil[device][1]:.3f}"
            print(row)
        row = f"{'median':10s}"
        for m in methods:
            row += f"{np.median([t for t, _ in meds[m]]):>8.3f}/{np.median([r for _, r in meds[m]]):.3f}"
        row += f"{np.median([c[0] for c in ceil.values()]):>8.3f}/{np.median([c[1] for c in ceil.values()]):.3f}"
        print(row)
        for m in fewshot.METHODS:
            ahead = sum(t > b for (t, _), (b, _) in zip(meds[m], meds["baseline"]))
            worst = min(t - b for (t, _), (b, _) in zip(meds[m], meds["baseline"]))
            summary.append((space, k, m, float(np.median([t for t, _ in meds[m]])), ahead, len(prior.devices),
                            worst))

print("\ngoal: median Kendall tau >= 0.90 at K = 10, >= 0.92 at K = 20, ahead of the baseline on every column")
print(f"{'space':6s} {'K':>3s} {'method':9s} {'median tau':>10s} {'ahead of baseline':>18s} "
      f"{'worst margin':>12s} {'goal':>6s}")
for space, k, m, tau, ahead, cols, worst in summary:
    goal = GOALS.get(k)
    verdict = "-" if goal is None else ("met" if tau >= goal and ahead == cols else "missed")
    print(f"{space:6s} {k:>3d} {m:9s} {tau:>10.3f} {ahead:>12d} of {cols:<3d} {worst:>+12.3f} {verdict:>6s}")
print(f"\n{time.perf_counter() - started:.0f} s")
