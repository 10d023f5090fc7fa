"""The point-in-time protocol's rules on tiny hand-made logs, and its counts on MovieLens-100k."""

from __future__ import annotations

import numpy as np
import pytest

from convcg.contract import Conversion, Engagement, Impression
from streams.replay.datasets import EventLog, catalog_from_events, load_log, sort_events
from training.evaluation.settings import ProtocolSettings
from training.history import interactions_from_log
from training.evaluation.protocol import (
    HEADLINE,
    STATIC,
    EvaluationSet,
    metric_name,
    make_queries,
    rank_queries,
    recall_metrics,
    split_time,
)

ITEMS = ("a", "b", "c", "d", "e")


def click(user: str, item: str, ts: float, dwell_ms: int = 1000) -> list:
    imp = f"imp-{user}-{item}-{ts}"
    return [Impression(f"i-{imp}", imp, ts - 1.0, user, item, f"adv-{item}", "home", 1),
            Engagement(f"e-{imp}", imp, ts, user, item, "click", dwell_ms)]


def buy(user: str, item: str, ts: float, impression_id: str | None = None) -> Conversion:
    return Conversion(f"c-{user}-{item}-{ts}", ts, user, item, f"adv-{item}", "checkout", 1.0, impression_id)


def tiny_log(*groups) -> EventLog:
    events = [e for g in groups for e in (g if isinstance(g, list) else [g])]
    events += [Impression(f"i-x-{i}", f"x-{i}", 0.0, "nobody", i, f"adv-{i}", "home", 1) for i in ITEMS]
    sort_events(events)
    return EventLog("tiny", events, catalog_from_events(events))


class Recorder:
    """A scorer that records what each query saw and scores items by fixed values."""

    def __init__(self, inter, item_scores: dict[str, float] | None = None):
        self.inter, self.seen = inter, []
        index = {item: n for n, item in enumerate(inter.item_ids)}
        self.scores = np.zeros(inter.n_items)
        for item, value in (item_scores or {}).items():
            self.scores[index[item]] = value

    def __call__(self, batch, task):
        query, row = batch.flat
        eng = self.inter.engagements
        for q in range(len(batch)):
            rows = row[query == q]
            self.seen.append((self.inter.item_ids[batch.item[q]], float(batch.as_of[q]),
                              [self.inter.item_ids[i] for i in eng["item"].to_numpy()[rows]],
                              eng["ts"].to_numpy()[rows]))
        return np.tile(self.scores, (len(batch), 1))


def seen_by_target(inter, task: str, cut: float, protocol: str) -> dict[str, list[str]]:
    rec = Recorder(inter)
    rank_queries(rec, inter, make_queries(inter, task, cut, protocol=protocol), batch_size=2)
    for _, as_of, _, ts in rec.seen:
        assert (ts < as_of).all()
    return {target: items for target, _, items, _ in rec.seen}


def test_query_sees_only_engagements_strictly_before_its_time():
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 20),
                                           click("u1", "d", 30), click("u2", "e", 5)))
    pit = seen_by_target(inter, "engagement", cut=20, protocol="point-in-time")
    assert pit == {"b": ["a"], "c": ["a"], "d": ["a", "b", "c"]}  # c at the same second as b: not before
    static = seen_by_target(inter, "engagement", cut=20, protocol="static")
    assert static == {"b": ["a"], "c": ["a"], "d": ["a"]}


def test_engaged_items_are_excluded_but_the_positive_stays_findable():
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 30),
                                           click("u1", "a", 40)))
    queries = make_queries(inter, "engagement", cut=25)
    # a and b (engaged before) score highest but are excluded; then e, d, c
    rec = Recorder(inter, {"a": 10, "b": 9, "e": 3, "d": 2, "c": 1})
    ranks = rank_queries(rec, inter, queries, batch_size=8)
    by_target = dict(zip(inter.item_ids[queries.item], ranks))
    assert by_target["c"] == 2      # behind e and d; a and b do not count
    assert by_target["a"] == 0      # a repeat: engaged before, still findable, ranked first


def test_cold_and_warm_users_are_split_at_the_cut():
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 30), click("u2", "c", 30),
                                           click("u2", "d", 40), click("u3", "e", 25)))
    queries = make_queries(inter, "engagement", cut=25)
    cold = {(inter.user_ids[u], inter.item_ids[i]): c for u, i, c in zip(queries.user, queries.item, queries.cold)}
    assert cold == {("u1", "b"): False, ("u2", "c"): True, ("u2", "d"): True, ("u3", "e"): True}


def test_a_known_ranking_gives_a_known_recall():
    inter = interactions_from_log(tiny_log(click("u1", "a", 30), click("u2", "c", 30), click("u3", "e", 30),
                                           click("u4", "b", 30)))
    queries = make_queries(inter, "engagement", cut=25)
    rec = Recorder(inter, {"a": 5, "b": 4, "c": 3, "d": 2, "e": 1})  # ranks a=0, b=1, c=2, e=4
    ranks = rank_queries(rec, inter, queries, batch_size=3)
    metrics = recall_metrics(ranks, queries, ks=(1, 2, 3, 5))
    assert metrics["engagement_recall@1"] == 0.25
    assert metrics["engagement_recall@2"] == 0.5
    assert metrics["engagement_recall@3"] == 0.75
    assert metrics["engagement_recall@5"] == 1.0


def test_ties_are_broken_by_item_index():
    inter = interactions_from_log(tiny_log(click("u1", "d", 30)))
    ranks = rank_queries(Recorder(inter), inter, make_queries(inter, "engagement", cut=25), batch_size=1)
    assert ranks.tolist() == [list(inter.item_ids).index("d")]


def test_conversion_is_a_query_at_its_attributed_click():
    imp_b = "imp-u1-b-20"
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 30),
                                           buy("u1", "b", 5000, impression_id=imp_b),  # click id
                                           buy("u1", "c", 9000),  # last touch
                                           buy("u2", "e", 50)))   # no click: its own time
    conv = inter.conversions.assign(item=inter.item_ids[inter.conversions["item"]])
    assert dict(zip(conv["item"], conv["ts"])) == {"b": 20, "c": 30, "e": 50}
    assert dict(zip(conv["item"], conv["known_ts"])) == {"b": 5000, "c": 9000, "e": 50}
    seen = seen_by_target(inter, "conversion", cut=15, protocol="point-in-time")
    assert seen == {"b": ["a"], "c": ["a", "b"], "e": []}


def test_split_time_is_an_engagement_time_at_the_quantile():
    inter = interactions_from_log(tiny_log(*[click("u1", i, ts) for i, ts in zip(ITEMS, (10, 20, 30, 40, 50))]))
    assert split_time(inter, 0.5) == 30
    assert split_time(inter, 0.5, before=40) == 20


@pytest.fixture(scope="module")
def movielens():
    return interactions_from_log(load_log("movielens-100k"))


def test_movielens_100k_counts(movielens):
    cut = split_time(movielens, ProtocolSettings().test_quantile)
    assert cut == 889_237_269
    evaluation = EvaluationSet.build(movielens, cut)
    engagement = evaluation.queries[("engagement", "point-in-time")]
    conversion = evaluation.queries[("conversion", "point-in-time")]
    assert len(engagement) == 20_001
    assert len(conversion) == 4_636
    assert int(conversion.cold.sum()) == 3_955
    static = evaluation.queries[("conversion", "static")]
    assert (static.as_of == cut).all() and (conversion.as_of >= cut).all()


def test_metric_names_are_spelt_by_one_function():
    # the names the registry's metrics.json, the gate and every report share
    assert metric_name("conversion", 100) == HEADLINE
    assert metric_name("conversion", 100, STATIC, "cold") == "static_conversion_recall@100_cold"
    assert metric_name("engagement", 20, group="warm") == "engagement_recall@20_warm"
