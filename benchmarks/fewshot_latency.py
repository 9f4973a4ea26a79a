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

With ``--meta``, two more peers (not methods of the command; about a minute more per K):

* ``meta``: a HELP-like meta-learned model (Lee et al., NeurIPS 2021, in a
  cheaper form): an MLP encoder of the one-hot architecture (to 8 features)
  trained on the prior devices' tables with one linear head per device, then
  a new head fitted to the K shots by leave-one-out ridge;
* ``blend+meta``: ``blend`` with ``meta`` as a fifth part, weighted by its
  leave-one-out error like the others.

With ``--ceilings``, a table of what richer models reach per column when
fitted on half the table (the same split as ``ceiling``): least squares on
``[z, one-hot]`` in log ms and on ``[prior ms, one-hot]`` in ms, ``mix-cost``,
least squares on ``[z, one-hot]`` and every pairwise product of the one-hot
terms (nb201 only), and gradient-boosted trees (XGBoost, 400 trees of depth 6)
on ``[z, one-hot]`` and on the one-hot alone, with the best per column and the
median of those bests: a bound on what any few-shot method built on these
inputs can be expected to reach (about 30 s more).

    python benchmarks/fewshot_latency.py [--space nb201 fbnet] [--shots 5 10 20 50] [--seeds 5] [--meta]
        [--ceilings]

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
parser.add_argument("--meta", action="store_true", help="add the HELP-like meta-learned peers (trains a torch MLP "
                                                         "per left-out device, one thread)")
parser.add_argument("--ceilings", action="store_true", help="print what richer models reach per column with half "
                                                             "the table (XGBoost, pairwise terms; minutes)")
args = parser.parse_args()

from scipy.stats import kendalltau, spearmanr  # noqa: E402

from hwnas.cost import fewshot  # noqa: E402

GOALS = {10: 0.90, 20: 0.92}
META_FEATURES = 8


def meta_encoder(space: str, genomes: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Standardised ``(N, META_FEATURES)`` encoding of ``genomes``, trained to predict every prior column."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    x = torch.tensor(fewshot.one_hot(space, genomes), dtype=torch.float32)
    t = torch.tensor((targets - targets.mean(0)) / targets.std(0), dtype=torch.float32)
    encoder = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 128), torch.nn.ReLU(), torch.nn.Linear(128, 128),
                                  torch.nn.ReLU(), torch.nn.Linear(128, META_FEATURES))
    heads = torch.nn.Linear(META_FEATURES, t.shape[1])
    opt = torch.optim.Adam([*encoder.parameters(), *heads.parameters()], lr=3e-3)
    for _ in range(60 if space == "nb201" else 150):
        order = torch.randperm(len(x))
        for start in range(0, len(x), 1024):
            batch = order[start:start + 1024]
            loss = ((heads(encoder(x[batch])) - t[batch]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    with torch.no_grad():
        h = encoder(x).numpy().astype(float)
    return (h - h.mean(0)) / (h.std(0) + 1e-9)


def meta_fit(h: np.ndarray, y: np.ndarray, rows) -> np.ndarray:
    """Log ms of ``rows`` from a head fitted to the shots (``h``, ``y``) by leave-one-out ridge."""
    w = fewshot._loo_ridge(h - h.mean(0), y - y.mean())
    return y.mean() + (rows - h.mean(0)) @ w


def blend_with_meta(inputs: fewshot.Inputs, h: np.ndarray, idx: np.ndarray, y: np.ndarray) -> np.ndarray:
    parts, weights = [], []
    for part in fewshot.BLEND_OF:
        weights.append(1 / fewshot.loo_error(lambda train, i: float(fewshot.predict_terms(
            fewshot.fit_terms(inputs.rows(idx[train]), y[train], part), inputs.rows([idx[i]]))[0]), y))
        parts.append(fewshot.predict_terms(fewshot.fit_terms(inputs.rows(idx), y, part), inputs))
    weights.append(1 / fewshot.loo_error(lambda train, i: float(meta_fit(h[idx[train]], y[train], h[idx[i]])), y))
    parts.append(meta_fit(h[idx], y, h))
    return sum(w * p for w, p in zip(weights, parts)) / sum(weights)


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


def ceilings(space: str, inputs: fewshot.Inputs, y: np.ndarray, rng) -> dict[str, float]:
    """Kendall tau on the held-out half of richer models fitted on the other half (``--ceilings``)."""
    import xgboost

    perm = rng.permutation(len(y))
    train, test = perm[: len(y) // 2], perm[len(y) // 2:]
    onehot = inputs.x[:, inputs.ms.shape[1]:]
    out = {}

    def lstsq(x, target=y):
        x = np.hstack([np.ones((len(y), 1)), x])
        return x[test] @ np.linalg.lstsq(x[train], target[train], rcond=None)[0]

    out["lin"] = kendalltau(lstsq(inputs.x), y[test])[0]
    out["lin-ms"] = kendalltau(lstsq(np.hstack([inputs.ms, onehot]), np.exp(y)), y[test])[0]
    out["mix-cost"] = kendalltau(fewshot.predict_terms(fewshot.fit_terms(inputs.rows(train), y[train], "mix-cost"),
                                                       inputs.rows(test)), y[test])[0]
    if space == "nb201":
        i, j = np.triu_indices(onehot.shape[1], 1)
        out["lin+pairs"] = kendalltau(lstsq(np.hstack([inputs.x, onehot[:, i] * onehot[:, j]])), y[test])[0]
    for name, x in (("xgb", inputs.x), ("xgb-arch", onehot)):
        model = xgboost.XGBRegressor(n_estimators=400, max_depth=6, learning_rate=0.05, n_jobs=1, random_state=0)
        model.fit(x[train], y[train])
        out[name] = kendalltau(model.predict(x[test]), y[test])[0]
    return out


started = time.perf_counter()
methods = ["baseline", *fewshot.METHODS, *(["meta", "blend+meta"] if args.meta else [])]
summary = []
for space in args.space:
    prior = fewshot.load_prior(space)
    n = len(prior.genomes)
    res: dict[tuple[str, int, str], list[tuple[float, float]]] = {}
    ceil: dict[str, tuple[float, float]] = {}
    rich: dict[str, dict[str, float]] = {}
    for j, device in enumerate(prior.devices):
        y = prior.log_ms[:, j]
        others = [c for c in range(len(prior.devices)) if c != j]
        devices = tuple(prior.devices[c] for c in others)
        inputs = prior.inputs(prior.genomes, devices)
        ceil[device] = ceiling(inputs, y, np.random.default_rng(0))
        h = meta_encoder(space, prior.genomes, prior.log_ms[:, others]) if args.meta else None
        if args.ceilings:
            rich[device] = ceilings(space, inputs, y, np.random.default_rng(0))
        for k in args.shots:
            for seed in range(args.seeds):
                idx = np.random.default_rng(1000 * seed + k).choice(n, size=k, replace=False)
                preds = {"baseline": baseline(prior.log_ms, others, idx, y[idx])}
                for m in fewshot.METHODS:
                    preds[m] = fewshot.predict_terms(fewshot.fit_terms(inputs.rows(idx), y[idx], m), inputs)
                if args.meta:
                    preds["meta"] = meta_fit(h[idx], y[idx], h)
                    preds["blend+meta"] = blend_with_meta(inputs, h, idx, y[idx])
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
        for m in methods[1:]:
            ahead = sum(t > b for (t, _), (b, _) in zip(meds[m], meds["baseline"]))
            worst = min(t - b for (t, _), (b, _) in zip(meds[m], meds["baseline"]))
            summary.append((space, k, m, float(np.median([t for t, _ in meds[m]])), ahead, len(prior.devices),
                            worst))
    if rich:
        names = list(next(iter(rich.values())))
        print(f"\n{space}: richer models fitted on half the table, Kendall tau on the other half (--ceilings)")
        head = f"{'device':10s}" + "".join(f"{m:>11s}" for m in names) + f"{'best':>11s}"
        print(head)
        print("-" * len(head))
        for device, taus in rich.items():
            print(f"{device:10s}" + "".join(f"{taus[m]:>11.3f}" for m in names) + f"{max(taus.values()):>11.3f}")
        print(f"{'median':10s}" + "".join(f"{np.median([t[m] for t in rich.values()]):>11.3f}" for m in names) +
              f"{np.median([max(t.values()) for t in rich.values()]):>11.3f}")

print("\ngoal: median Kendall tau >= 0.90 at K = 10, >= 0.92 at K = 20, ahead of the baseline on every column")
print(f"{'space':6s} {'K':>3s} {'method':9s} {'median tau':>10s} {'ahead of baseline':>18s} "
      f"{'worst margin':>12s} {'goal':>6s}")
for space, k, m, tau, ahead, cols, worst in summary:
    goal = GOALS.get(k)
    verdict = "-" if goal is None else ("met" if tau >= goal and ahead == cols else "missed")
    print(f"{space:6s} {k:>3d} {m:9s} {tau:>10.3f} {ahead:>12d} of {cols:<3d} {worst:>+12.3f} {verdict:>6s}")
print(f"\n{time.perf_counter() - started:.0f} s")
