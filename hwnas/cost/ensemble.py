"""A bootstrap ensemble: the one way hwnas fits a model with an error bar.

:class:`BootstrapEnsemble` fits ``n_models`` members, each on a bootstrap
resample of the rows (the first on all rows: with few points a resample drops
too much) and with its own seed; its prediction is the members' mean and their
standard deviation (the spread says where the model is unsure; it
underestimates the error where all members agree on what none can learn, such
as measurement noise). What a member is - an XGBoost regressor
(:func:`fit_xgb`), a small MLP - is the caller's: it passes the functions
that fit one member and predict with one.

Deterministic for a seed: the resamples come from
``numpy.random.default_rng(seed)`` and member ``i`` gets the seed
``(seed * seed_stride + i) mod 2**31`` (:meth:`BootstrapEnsemble.member_seed`).
Used by the ``predictor`` cost method (:class:`~hwnas.cost.predictor.LatencyPredictor`)
and by the search's surrogate (``hwnas.search.surrogate``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from hwnas.errors import InvalidConfigError, RunError


class BootstrapEnsemble:
    """``fit_member(X, y, seed) -> member`` and ``predict_member(member, X) -> array`` define the members.

    ``members`` may also be set directly (members saved by an earlier fit).
    """

    def __init__(self, fit_member: Callable[[np.ndarray, np.ndarray, int], Any],
                 predict_member: Callable[[Any, np.ndarray], np.ndarray], *, n_models: int = 5, seed: int = 0,
                 seed_stride: int = 7919) -> None:
        if n_models < 1:
            raise InvalidConfigError(f"n_models must be >= 1, got {n_models}")
        self.fit_member = fit_member
        self.predict_member = predict_member
        self.n_models = int(n_models)
        self.seed = int(seed)
        self.seed_stride = int(seed_stride)
        self.members: list[Any] = []

    def member_seed(self, i: int) -> int:
        return (self.seed * self.seed_stride + i) % (2**31)

    def fit(self, X: np.ndarray, y: np.ndarray) -> BootstrapEnsemble:
        """Fit every member on its resample of the rows of ``X`` and ``y`` (one target or several)."""
        X, y = np.asarray(X), np.asarray(y)
        if len(X) != len(y):
            raise InvalidConfigError(f"{len(X)} feature rows but {len(y)} targets")
        rng = np.random.default_rng(self.seed)
        self.members = []
        for i in range(self.n_models):
            rows = np.arange(len(X)) if i == 0 else rng.integers(0, len(X), len(X))
            self.members.append(self.fit_member(X[rows], y[rows], self.member_seed(i)))
        return self

    def predict(self, X: np.ndarray,
                transform: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The members' mean and standard deviation per row, after ``transform`` (applied to the stacked
        predictions of all members, e.g. back to the targets' units) when given."""
        if not self.members:
            raise RunError("fit the ensemble before predicting")
        preds = np.stack([self.predict_member(m, X) for m in self.members])
        if transform is not None:
            preds = transform(preds)
        return preds.mean(axis=0), preds.std(axis=0)


def fit_xgb(X: np.ndarray, y: np.ndarray, seed: int, **params: Any):
    """One XGBoost regressor (``hist`` trees, one thread: the same data and seed give the same model bit
    for bit) fitted on ``X``, ``y``; ``params``: its hyper-parameters (``n_estimators``, ``max_depth``, ...)."""
    from xgboost import XGBRegressor

    model = XGBRegressor(tree_method="hist", n_jobs=1, verbosity=0, random_state=seed, **params)
    model.fit(X, y)
    return model
