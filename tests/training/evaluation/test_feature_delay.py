"""Delayed user features (``training.evaluation.feature_delay``): what a query sees, and what it is
still graded against."""

from __future__ import annotations

import numpy as np
import pytest

from tests.training.evaluation.test_protocol import Recorder, buy, click, tiny_log
from training.evaluation.feature_delay import FROZEN, delay_label, delayed_scorer
from training.evaluation.protocol import EvaluationSet, make_queries, rank_queries
from training.evaluation.scoring import grade
from training.evaluation.settings import ProtocolSettings
from training.history import HistoryIndex, interactions_from_log


def log_of_one_user():
    # u clicks a at 100, b at 200, c at 1000 (the test conversion's click at 1000, cut at 150)
    return tiny_log(click("u", "a", 100.0), click("u", "b", 200.0), click("u", "c", 1000.0),
                    buy("u", "c", 1001.0, "imp-u-c-1000.0"))


@pytest.mark.parametrize("delay, visible", [(0.0, ["a", "b"]), (700.0, ["a", "b"]), (850.0, ["a"]),
                                            (5000.0, []), (FROZEN, ["a"])])
def test_the_history_ends_before_as_of_minus_delay_or_at_the_cut(delay, visible):
    inter = interactions_from_log(log_of_one_user())
    queries = make_queries(inter, "conversion", 150.0)
    recorder = Recorder(inter)
    rank_queries(delayed_scorer(recorder, HistoryIndex(inter), delay, 150.0), inter, queries, 8)
    item, as_of, seen, _ = recorder.seen[0]
    assert (item, as_of) == ("c", 1000.0)  # the query's own time is kept
    assert seen == visible


def test_exclusions_stay_those_of_the_query_time():
    # b was engaged before the query: excluded from the ranking even when the delayed
    # features no longer show it, so a scorer that ranks b first still finds c at rank 0
    inter = interactions_from_log(log_of_one_user())
    queries = make_queries(inter, "conversion", 150.0)
    scorer = Recorder(inter, {"b": 3.0, "c": 2.0})
    ranks = rank_queries(delayed_scorer(scorer, HistoryIndex(inter), 5000.0, 150.0), inter, queries, 8)
    assert ranks.tolist() == [0]


def test_a_history_reading_scorer_loses_recall_when_its_features_are_late():
    # the next item is "the item after the last one seen": fresh features find it, late ones don't
    groups = []
    for n, user in enumerate(["u1", "u2", "u3"]):
        groups += [click(user, "a", 10.0 + n), click(user, "b", 500.0 + n), click(user, "c", 900.0 + n),
                   buy(user, "c", 901.0 + n, f"imp-{user}-c-{900.0 + n}")]
    inter = interactions_from_log(tiny_log(*groups))
    index = {item: n for n, item in enumerate(inter.item_ids)}

    def next_of_last(batch, task):
        items, _, _ = batch.last_items(1)
        out = np.zeros((len(batch), inter.n_items))
        for q, last in enumerate(items[:, -1]):
            if last == index["b"]:
                out[q, index["c"]] = 1.0
            elif last == index["a"]:
                out[q, index["d"]] = 1.0
        return out

    evaluation = EvaluationSet.build(inter, 100.0, tasks=("conversion",), protocols=("point-in-time",))
    settings = ProtocolSettings(ks=(1,))
    fresh = grade(evaluation, delayed_scorer(next_of_last, evaluation.index, 0.0, 100.0), settings)
    late = grade(evaluation, delayed_scorer(next_of_last, evaluation.index, 600.0, 100.0), settings)
    assert fresh["conversion_recall@1"] == 1.0
    assert late["conversion_recall@1"] == 0.0


def test_negative_delay_is_refused_and_labels_read_well():
    inter = interactions_from_log(log_of_one_user())
    with pytest.raises(ValueError, match="not negative"):
        delayed_scorer(Recorder(inter), HistoryIndex(inter), -1.0, 0.0)
    assert [delay_label(d) for d in (0.0, 60.0, 600.0, 3600.0, 86400.0, FROZEN, 90.0)] == [
        "0 s", "1 min", "10 min", "1 h", "1 d", "frozen at T", "90 s"]
