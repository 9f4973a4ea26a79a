"""The surrogate model (one-hot + bootstrap XGBoost ensemble) and the surrogate-assisted NSGA-II.

The searches run on the toy plugin target (a formula), which tests the
plumbing: budget, no repeated point, constraints, failures, reproducibility.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import kendalltau

from hwnas.errors import InvalidConfigError
from hwnas.search import surrogate as surrogate_module
from hwnas.search.config import SURROGATES, SearchConfig
from hwnas.search.driver import Search
from hwnas.search.screening import select_by_prediction
from hwnas.search.surrogate import CategoricalGP, OneHotEncoder, SurrogateEnsemble

TOY = str(Path(__file__).with_name("toy_target.py"))
PROXY = {"accuracy": "proxy", "accuracy_options": {"kind": "synflow"}}
CARDS = (5, 5, 5, 5, 5, 5, 3, 4)


def config(**kw):
    base = dict(targets=("toy",), space="nb201", budget=40, pop_size=8, workers=0, plugins=(TOY,),
                surrogate="xgb", **PROXY)
    base.update(kw)
    return SearchConfig(**base)


def known_function(X):
    """Additive per-gene effects plus a pairwise interaction and a gene-gated term: categorical, not ordinal."""
    rng = np.random.default_rng(123)
    tables = [rng.normal(size=c) for c in CARDS]
    pair = rng.normal(size=(CARDS[0], CARDS[1]))
    X = np.asarray(X)
    y = sum(t[X[:, i]] for i, t in enumerate(tables)) + 0.7 * pair[X[:, 0], X[:, 1]]
    return y + np.where(X[:, 6] == 2, 0.5 * X[:, 7], 0.0)


def samples(n, seed):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, c, n) for c in CARDS])


def test_one_hot_encoding():
    enc = OneHotEncoder((3, 2), ordinal=False)
    assert enc.transform([[2, 0], [0, 1]]).tolist() == [[0, 0, 1, 1, 0], [1, 0, 0, 0, 1]]
    enc = OneHotEncoder((3, 2))
    assert enc.n_features == 7 and enc.transform([[2, 1]]).tolist() == [[0, 0, 1, 0, 1, 2, 1]]
    with pytest.raises(ValueError):
        enc.transform([[3, 0]])


def test_ensemble_ranks_held_out_points_of_a_known_function():
    X, Xt = samples(300, 0), samples(300, 1)
    model = SurrogateEnsemble(CARDS, seed=0).fit(X, known_function(X))
    mean, std = model.predict(Xt)
    assert mean.shape == std.shape == (300,)
    tau = kendalltau(mean, known_function(Xt)).statistic
    assert tau > 0.7, tau
    assert (std >= 0).all() and std.mean() > 0  # the bootstrap members disagree somewhat


def test_ensemble_predicts_several_targets_in_their_units():
    X, Xt = samples(200, 2), samples(100, 3)
    Y = np.column_stack([known_function(X), 1000 + 50 * known_function(X)])
    mean, std = SurrogateEnsemble(CARDS, seed=0).fit(X, Y).predict(Xt)
    assert mean.shape == std.shape == (100, 2)
    assert abs(mean[:, 1].mean() - 1000) < 100
    assert kendalltau(mean[:, 1], known_function(Xt)).statistic > 0.6


def test_ensemble_is_deterministic_for_a_seed():
    X, Xt = samples(120, 4), samples(50, 5)
    y = known_function(X)
    a = SurrogateEnsemble(CARDS, seed=7).fit(X, y).predict(Xt)
    b = SurrogateEnsemble(CARDS, seed=7).fit(X, y).predict(Xt)
    c = SurrogateEnsemble(CARDS, seed=8).fit(X, y).predict(Xt)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_gaussian_process_ranks_held_out_points_and_knows_where_it_has_seen_data():
    X, Xt = samples(200, 0), samples(300, 1)
    gp = CategoricalGP(CARDS).fit(X, known_function(X))
    mean, std = gp.predict(Xt)
    assert mean.shape == std.shape == (300,)
    tau = kendalltau(mean, known_function(Xt)).statistic
    assert tau > 0.85, tau  # 0.90 measured
    seen_mean, seen_std = gp.predict(X[:50])
    # at the training points: near the data (the noise term allows a little), and surer than elsewhere
    assert np.abs(seen_mean - known_function(X[:50])).mean() < 0.1 * np.abs(mean - known_function(Xt)).mean()
    assert seen_std.mean() < 0.3 * std.mean()
    again = CategoricalGP(CARDS).fit(X, known_function(X)).predict(Xt)
    assert np.array_equal(again[0], mean) and np.array_equal(again[1], std)  # no random restarts


def test_selection_prefers_predicted_front_extensions_and_feasibility():
    known = np.array([[0.0, 10.0], [5.0, 5.0], [10.0, 0.0]])
    predicted = np.array([[6.0, 6.0],    # dominated by a known point
                          [2.0, 2.0],    # dominates the middle of the known front
                          [2.5, 7.0],    # dominated by candidate 1 only: next level
                          [1.0, 1.0]])   # best of all, but predicted infeasible
    violation = np.array([0.0, 0.0, 0.0, 0.3])
    assert select_by_prediction(known, predicted, violation, 2).tolist() == [1, 2]
    assert select_by_prediction(known, predicted, violation, 4).tolist() == [1, 2, 0, 3]
    assert select_by_prediction(np.zeros((0, 2)), predicted, violation, 1).tolist() == [1]


def test_unknown_surrogate_is_refused_naming_the_choices():
    with pytest.raises(InvalidConfigError, match="unknown surrogate 'gp'.*ehvi, xgb, none"):
        config(surrogate="gp")
    assert set(SURROGATES) == {"ehvi", "xgb", "none"}


def test_surrogate_search_spends_its_budget_once_per_point_and_honours_constraints(tmp_path, monkeypatch):
    fits = []
    real_fit = surrogate_module.SurrogateEnsemble.fit
    monkeypatch.setattr(surrogate_module.SurrogateEnsemble, "fit",
                        lambda self, X, Y: fits.append(len(X)) or real_fit(self, X, Y))
    cons = ("latency_ms<=16", "peak_memory_kb<=40")
    s = Search(config(budget=48, constraints=cons), tmp_path / "run")
    front = s.run()
    assert s.evaluated == 48 and len({p.key for p in s.all_points()}) == 48
    assert fits and s.surrogate_generations > 0, "the surrogate was never used"
    assert front and all(p.status == "ok" for p in front)
    assert all(p.metrics["toy"]["latency_ms"] <= 16 and p.metrics["toy"]["peak_memory_kb"] <= 40 for p in front)
    assert any(p.status == "failed" for p in s.all_points())  # mode boom: failed points are there, not trained on


@pytest.mark.slow  # ~6 s; by default tests/search/test_canonical.py checks a seeded default search is identical
def test_surrogate_search_is_reproducible_from_its_seed(tmp_path):
    keys = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        s = Search(config(budget=32, seed=seed), tmp_path / name)
        s.run()
        keys[name] = [p.key for p in s.all_points()]
    assert keys["a"] == keys["b"]
    assert keys["a"] != keys["c"]
