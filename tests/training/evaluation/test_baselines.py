"""Baselines of the point-in-time protocol: their building blocks against direct computations,
and their order on MovieLens-100k (the history as of each query must pay off)."""

from __future__ import annotations

import numpy as np
import pytest

from streams.replay.datasets import load_log
from training.evaluation.baselines import WindowCounts, baseline_scorers, ease_weights
from training.evaluation.protocol import HEADLINE, HEADLINE_K, STATIC, EvaluationSet, metric_name, split_time
from training.evaluation.scoring import grade
from training.evaluation.settings import EvalSettings
from training.history import interactions_from_log


def test_window_counts_match_a_direct_count():
    rng = np.random.default_rng(0)
    items = rng.integers(0, 7, size=300)
    ts = np.round(rng.uniform(0, 100, size=300))  # whole seconds: many exact ties with the probes
    counts = WindowCounts(items, ts, 7, window=10.0)
    probes = np.array([-5.0, 0.0, 3.0, 10.0, 50.0, 99.0, 100.0, 250.0])
    expected = np.array([[((items == j) & (ts < t) & (ts >= t - 10.0)).sum() for j in range(7)] for t in probes])
    np.testing.assert_array_equal(counts.at(probes), expected)


def test_ease_solves_its_constrained_ridge_regression():
    rng = np.random.default_rng(1)
    x = (rng.random((40, 6)) < 0.3).astype(float)
    lam = 3.0
    b = ease_weights(x, lam)
    assert np.allclose(np.diag(b), 0.0)
    for j in range(6):  # column j: ridge regression of x_j on the other columns
        others = [k for k in range(6) if k != j]
        a = x[:, others]
        direct = np.linalg.solve(a.T @ a + lam * np.eye(5), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], direct, atol=1e-10)


@pytest.fixture(scope="module")
def movielens_results():
    settings = EvalSettings()
    inter = interactions_from_log(load_log("movielens-100k"))
    cut = split_time(inter, settings.protocol.test_quantile)
    scorers, chosen = baseline_scorers(inter, cut, settings.baselines, settings.protocol)
    evaluation = EvaluationSet.build(inter, cut, tasks=("conversion",))
    return {name: grade(evaluation, s, settings.protocol) for name, s in scorers.items()}, chosen


def test_history_as_of_each_query_beats_popularity_only_under_the_point_in_time_protocol(movielens_results):
    results, chosen = movielens_results
    pit = {name: m[HEADLINE] for name, m in results.items()}
    static = {name: m[metric_name("conversion", HEADLINE_K, STATIC)] for name, m in results.items()}
    assert pit["ease"] > 1.2 * pit["popularity"] and pit["item_knn"] > 1.15 * pit["popularity"]
    # frozen at T, most test users have no history: nothing separates from popularity
    assert max(static.values()) - min(static["popularity"], static["ease"], static["item_knn"]) < 0.03
    assert chosen["ease_lambda"] in EvalSettings().baselines.ease_lambdas
