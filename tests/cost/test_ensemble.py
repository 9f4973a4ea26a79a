"""BootstrapEnsemble: the resamples, the members' seeds, mean and spread; fit_xgb's determinism."""

from __future__ import annotations

import numpy as np
import pytest

from hwnas.cost.ensemble import BootstrapEnsemble, fit_xgb
from hwnas.errors import InvalidConfigError, RunError


def mean_member(X, y, seed):
    """A member that predicts the mean of the targets it was fitted on (and remembers what it saw)."""
    return {"mean": float(np.mean(y)), "seed": seed, "rows": X[:, 0].tolist()}


def predict_mean(member, X):
    return np.full(len(X), member["mean"])


X = np.arange(20, dtype=float).reshape(-1, 1)
Y = X[:, 0] ** 2


def test_members_see_bootstrap_resamples_with_their_own_seeds():
    ens = BootstrapEnsemble(mean_member, predict_mean, n_models=4, seed=3, seed_stride=1009).fit(X, Y)
    assert [m["seed"] for m in ens.members] == [3 * 1009 + i for i in range(4)]
    assert ens.members[0]["rows"] == X[:, 0].tolist()  # the first member: every row, in order
    for m in ens.members[1:]:
        assert len(m["rows"]) == len(X) and set(m["rows"]) < set(X[:, 0])  # drawn with replacement
    again = BootstrapEnsemble(mean_member, predict_mean, n_models=4, seed=3, seed_stride=1009).fit(X, Y)
    other = BootstrapEnsemble(mean_member, predict_mean, n_models=4, seed=4, seed_stride=1009).fit(X, Y)
    assert [m["rows"] for m in again.members] == [m["rows"] for m in ens.members]
    assert [m["rows"] for m in other.members][1:] != [m["rows"] for m in ens.members][1:]
    assert BootstrapEnsemble(mean_member, predict_mean, seed=2**40).member_seed(1) < 2**31


def test_prediction_is_the_members_mean_and_spread_after_the_transform():
    ens = BootstrapEnsemble(mean_member, predict_mean, n_models=5, seed=0).fit(X, Y)
    means = np.array([m["mean"] for m in ens.members])
    mean, std = ens.predict(X[:3])
    assert mean == pytest.approx(np.full(3, means.mean())) and std == pytest.approx(np.full(3, means.std()))
    mean, std = ens.predict(X[:3], lambda p: p / 100.0)
    assert mean == pytest.approx(np.full(3, means.mean() / 100)) and std == pytest.approx(np.full(3, means.std() / 100))


def test_unfitted_and_bad_input_are_refused():
    with pytest.raises(InvalidConfigError, match="n_models"):
        BootstrapEnsemble(mean_member, predict_mean, n_models=0)
    with pytest.raises(RunError, match="fit"):
        BootstrapEnsemble(mean_member, predict_mean).predict(X)
    with pytest.raises(InvalidConfigError, match="20 feature rows but 3 targets"):
        BootstrapEnsemble(mean_member, predict_mean).fit(X, Y[:3])


def test_xgb_members_are_deterministic_for_their_seed():
    rng = np.random.default_rng(0)
    Xr, yr = rng.random((40, 3)), rng.random(40)

    def ensemble(seed):
        return BootstrapEnsemble(lambda X, y, s: fit_xgb(X, y, s, n_estimators=20, subsample=0.8),
                                 lambda m, X: m.predict(X), n_models=3, seed=seed).fit(Xr, yr)

    a, b, c = ensemble(1).predict(Xr), ensemble(1).predict(Xr), ensemble(2).predict(Xr)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert (a[1] > 0).any()  # the members differ
