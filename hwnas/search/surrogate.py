"""Surrogate models for surrogate-assisted search.

A search evaluates few points for real (each costs a compile and a measurement,
or a training run); a cheap model of the objectives, fitted on every point
evaluated so far in the run, can screen many more candidates and send to real
evaluation only the promising ones (predictor-guided evolution, as in BANANAS,
NPENAS or surrogate-screened MOEAs).

* :class:`OneHotEncoder` turns joint genomes (one categorical gene per
  position, gene ``i`` taking values ``0 .. cardinalities[i] - 1``) into
  feature vectors: one indicator per (gene, value), plus each gene's raw index
  (trees split ordinal hardware knobs - tile sizes, thread counts - on it).
* :class:`SurrogateEnsemble` is a bootstrap ensemble of XGBoost regressors
  (:class:`hwnas.cost.ensemble.BootstrapEnsemble`), one multi-output model per
  bootstrap resample, predicting every column of a target matrix at once; the
  spread of its members is the uncertainty estimate used by the acquisition
  (optimistic predictions ``mean - k * std``).

Both are deterministic for a seed: the same data and seed give the same
predictions bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hwnas.cost.ensemble import BootstrapEnsemble, fit_xgb


class OneHotEncoder:
    """Categorical genes -> ``float32`` features: a one-hot block per gene, then the raw gene values."""

    def __init__(self, cardinalities: Sequence[int], *, ordinal: bool = True) -> None:
        cards = [int(c) for c in cardinalities]
        if not cards or min(cards) < 1:
            raise ValueError(f"cardinalities must be positive integers, got {list(cardinalities)!r}")
        self.cardinalities = tuple(cards)
        self.ordinal = ordinal
        self.offsets = np.concatenate([[0], np.cumsum(cards)[:-1]]).astype(np.int64)
        self.n_features = int(sum(cards)) + (len(cards) if ordinal else 0)

    def transform(self, X: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.int64).reshape(-1, len(self.cardinalities))
        if X.size and ((X < 0).any() or (X >= np.array(self.cardinalities)).any()):
            raise ValueError("a gene value is outside its cardinality")
        n = len(X)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        if n:
            rows = np.repeat(np.arange(n), X.shape[1])
            out[rows, (X + self.offsets).ravel()] = 1.0
            if self.ordinal:
                out[:, sum(self.cardinalities):] = X
        return out


class LinearXgb:
    """A ridge regression on the one-hot genes, and boosted trees on what it leaves (its residuals): the
    additive part of a cost (each operation adds its latency) is learnt from few points, the
    interactions by the trees."""

    def __init__(self, coef: np.ndarray, intercept: np.ndarray, n_onehot: int, trees) -> None:
        self.coef, self.intercept, self.n_onehot, self.trees = coef, intercept, n_onehot, trees

    def linear(self, features: np.ndarray) -> np.ndarray:
        out = features[:, : self.n_onehot].astype(np.float64) @ self.coef + self.intercept
        return out if out.ndim == 2 else out[:, None]

    def predict(self, features: np.ndarray) -> np.ndarray:
        base = self.linear(features)
        return base + np.asarray(self.trees.predict(features), dtype=np.float64).reshape(base.shape)


def fit_linear_xgb(X: np.ndarray, y: np.ndarray, seed: int, *, n_onehot: int, alpha: float, **params) -> LinearXgb:
    """:class:`LinearXgb` fitted on features ``X`` (its first ``n_onehot`` columns the one-hot genes)."""
    A = X[:, :n_onehot].astype(np.float64)
    center = y.mean(axis=0)
    coef = np.linalg.solve(A.T @ A + alpha * np.eye(n_onehot), A.T @ (y - center))
    model = LinearXgb(coef, center, n_onehot, None)
    residual = y.reshape(len(X), -1) - model.linear(X)
    model.trees = fit_xgb(X, residual if y.ndim == 2 else residual[:, 0], seed, **params)
    return model


class SurrogateEnsemble:
    """Bootstrap ensemble of XGBoost regressors over one-hot encoded categorical genomes.

    ``fit(X, Y)`` trains ``n_models`` boosters (a :class:`~hwnas.cost.ensemble.BootstrapEnsemble`) on
    the targets standardised per column; ``predict(X)`` returns the members' mean and standard
    deviation, in the targets' own units, each of shape ``(len(X), n_targets)`` (``(len(X),)`` when
    ``Y`` was one column).
    """

    def __init__(self, cardinalities: Sequence[int], *, n_models: int = 5, n_estimators: int = 150,
                 max_depth: int = 4, learning_rate: float = 0.1, subsample: float = 1.0,
                 colsample_bytree: float = 1.0, min_child_weight: float = 1.0, seed: int = 0,
                 ordinal: bool = True, linear_alpha: float | None = None) -> None:
        self.encoder = OneHotEncoder(cardinalities, ordinal=ordinal)
        params = dict(n_estimators=n_estimators, max_depth=max_depth, learning_rate=learning_rate,
                      subsample=subsample, colsample_bytree=colsample_bytree, min_child_weight=min_child_weight)
        if linear_alpha is None:
            def fit(X, y, seed):
                return fit_xgb(X, y, seed, **params)
        else:
            def fit(X, y, seed):
                return fit_linear_xgb(X, y, seed, n_onehot=sum(self.encoder.cardinalities), alpha=linear_alpha,
                                      **params)
        self.ensemble = BootstrapEnsemble(fit, self._predict_member, n_models=n_models, seed=seed)
        self._center = self._scale = None
        self._vector = False

    def fit(self, X: Sequence[Sequence[int]] | np.ndarray, Y: Sequence | np.ndarray) -> SurrogateEnsemble:
        features = self.encoder.transform(X)
        Y = np.asarray(Y, dtype=np.float64)
        self._vector = Y.ndim == 1
        Y = Y.reshape(len(features), -1)
        if len(features) < 2:
            raise ValueError("a surrogate needs at least two points to fit")
        if not np.isfinite(Y).all():
            raise ValueError("surrogate targets must be finite")
        self._center = Y.mean(axis=0)
        self._scale = np.where(Y.std(axis=0) > 0, Y.std(axis=0), 1.0)
        Z = (Y - self._center) / self._scale
        self.ensemble.fit(features, Z if Z.shape[1] > 1 else Z[:, 0])
        return self

    def _predict_member(self, model, features: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(features), dtype=np.float64).reshape(len(features), len(self._center))

    def predict_members(self, X: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
        """Every member's prediction, in the targets' units: shape ``(n_models, len(X), n_targets)``."""
        if not self.ensemble.members:
            raise RuntimeError("fit the surrogate before predicting")
        features = self.encoder.transform(X)
        preds = np.stack([self._predict_member(m, features) for m in self.ensemble.members])
        return preds * self._scale + self._center

    def predict(self, X: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not self.ensemble.members:
            raise RuntimeError("fit the surrogate before predicting")
        features = self.encoder.transform(X)
        if not len(features):
            empty = np.zeros((0,) if self._vector else (0, len(self._center)))
            return empty, empty.copy()
        mean, std = self.ensemble.predict(features, lambda preds: preds * self._scale + self._center)
        if self._vector:
            return mean[:, 0], std[:, 0]
        return mean, std


class CategoricalGP:
    """A Gaussian process over categorical genomes, for one target column.

    The kernel mixes an exponential of the Hamming distance (``exp(-d / length)``: genomes that differ
    in few genes are alike) with the share of equal genes (a linear kernel on the one-hot genes: the
    additive part), plus a noise term; the targets are standardised. The length, the mix and the noise
    are chosen on a small grid by the marginal likelihood (no optimiser: the same data give the same
    model). ``predict`` returns the posterior mean and standard deviation, in the target's units.
    """

    LENGTHS = (1.0, 2.0, 4.0, 8.0)
    NOISES = (1e-3, 1e-2, 0.05, 0.2)
    LINEAR = (0.0, 0.25, 0.5, 0.8)

    def __init__(self, cardinalities: Sequence[int]) -> None:
        self.encoder = OneHotEncoder(cardinalities, ordinal=False)
        self.n_genes = len(self.encoder.cardinalities)

    def _kernel(self, same: np.ndarray, length: float, linear: float) -> np.ndarray:
        return (1 - linear) * np.exp(-(self.n_genes - same) / length) + linear * same / self.n_genes

    def fit(self, X: Sequence[Sequence[int]] | np.ndarray, y: Sequence[float] | np.ndarray) -> CategoricalGP:
        from scipy.linalg import cho_factor, cho_solve

        self._features = self.encoder.transform(X).astype(np.float64)
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if len(y) < 2 or not np.isfinite(y).all():
            raise ValueError("a Gaussian process needs at least two finite targets")
        self._center, self._scale = y.mean(), (y.std() or 1.0)
        z = (y - self._center) / self._scale
        same = self._features @ self._features.T
        best = None
        for length in self.LENGTHS:
            for linear in self.LINEAR:
                K = self._kernel(same, length, linear)
                for noise in self.NOISES:
                    try:
                        factor = cho_factor(K + noise * np.eye(len(z)))
                    except np.linalg.LinAlgError:
                        continue
                    alpha = cho_solve(factor, z)
                    evidence = -0.5 * z @ alpha - np.log(np.diag(factor[0])).sum()
                    if best is None or evidence > best[0]:
                        best = (evidence, (length, linear, noise), factor, alpha)
        if best is None:
            raise ValueError("no Gaussian process fits these targets")
        _, self.params, self._factor, self._alpha = best
        return self

    def predict(self, X: Sequence[Sequence[int]] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from scipy.linalg import cho_solve

        length, linear, _ = self.params
        k = self._kernel(self.encoder.transform(X).astype(np.float64) @ self._features.T, length, linear)
        mean = k @ self._alpha
        var = np.maximum(1.0 - np.einsum("ij,ji->i", k, cho_solve(self._factor, k.T)), 1e-12)
        return mean * self._scale + self._center, np.sqrt(var) * self._scale
