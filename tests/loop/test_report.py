"""The `convcg up` report's point-in-time evaluation on a tiny hand-made log: the baselines'
known recall, every registry version graded on the same queries, the target's verdict."""

from __future__ import annotations

import pytest

from convcg.contract import Conversion, Engagement, Impression
from loop.report import evaluate_versions, recall_table, retrieval_summary
from registry.store import ModelRegistry
from streams.replay.datasets import EventLog, catalog_from_events, sort_events
from tests.support.tiny_models import train_tiny_model_for_tests
from training.evaluation.protocol import HEADLINE, EvaluationSet
from training.evaluation.scoring import grade, model_scorer
from training.evaluation.settings import EvalSettings, ProtocolSettings
from training.history import interactions_from_log
from training.learn.sequences import SequenceFeatures

ITEMS = ("a", "b", "c", "d", "e")
SETTINGS = EvalSettings(protocol=ProtocolSettings(ks=(1, 2, 100)))


def click(user: str, item: str, ts: float, buy_after: float | None = None) -> list:
    imp = f"imp-{user}-{item}-{ts}"
    out = [Impression(f"i-{imp}", imp, ts - 1.0, user, item, f"adv-{item}", "home", 1),
           Engagement(f"e-{imp}", imp, ts, user, item, "click", 1000)]
    if buy_after is not None:
        out.append(Conversion(f"c-{imp}", ts + buy_after, user, item, f"adv-{item}", "checkout", 1.0, imp))
    return out


def tiny_log() -> tuple[list, int]:
    """(events, index of the first held-out event). Before the split (ts < 109) conversions
    make popularity rank a (3), b (2), c (1), then d, e; after it three users convert."""
    groups = [click("u1", "a", 10, 5), click("u2", "a", 12, 5), click("u3", "a", 14, 5),
              click("u4", "b", 20, 5), click("u5", "b", 22, 5), click("u6", "c", 30, 5),
              click("u9", "b", 50),
              click("u8", "a", 110, 20),   # popularity rank 0: a hit at 1
              click("u9", "c", 115, 25),   # b (engaged at 50) excluded: rank 1
              click("u7", "e", 120, 10)]   # a, b, c, d ahead: rank 4
    events = [e for g in groups for e in g]
    events += [Impression(f"i-x-{i}", f"x-{i}", 0.0, "nobody", i, f"adv-{i}", "home", 1) for i in ITEMS]
    sort_events(events)
    return events, next(n for n, e in enumerate(events) if e.ts >= 100)


def test_report_grades_baselines_and_every_version_on_the_same_point_in_time_queries(tmp_path):
    events, split = tiny_log()
    catalog = catalog_from_events(events)
    registry = ModelRegistry(tmp_path / "registry")
    version = train_tiny_model_for_tests(registry.root, catalog)
    rows, counts = evaluate_versions(events, split, catalog, registry, SETTINGS)
    by = {r["version"]: r for r in rows}
    assert counts["conversion_queries"] == 3 and counts["engagement_queries"] == 3
    assert counts["conversion_queries_cold_at_split"] == 2  # u7, u8; u9 engaged at 50
    pop = by["popularity"]
    assert (pop["conversion_recall@1"], pop["conversion_recall@2"], pop[HEADLINE]) == (
        1 / 3, 2 / 3, 1.0)
    assert pop["conversion_recall@1_warm"] == 0.0 and pop["conversion_recall@2_warm"] == 1.0
    # the static protocol's queries are frozen at the split: u9's history is the same here
    assert pop["static_conversion_recall@2"] == 2 / 3
    assert {"item_knn", "ease", "recent_popularity"} <= set(by)

    # the model is graded like `convcg eval` grades one: its sequence as of each query
    inter = interactions_from_log(EventLog("t", events, catalog))
    model = registry.load(version).model
    expected = grade(EvaluationSet.build(inter, events[split].ts),
                     model_scorer(model, SequenceFeatures(inter, model.config)), SETTINGS.protocol)
    assert by[version]["kind"] == "model"
    assert by[version]["conversion_recall@1"] == pytest.approx(expected["conversion_recall@1"])
    assert by[version]["engagement_recall@2"] == pytest.approx(expected["engagement_recall@2"])
    assert any(version in line for line in recall_table(rows))


def test_the_target_is_met_only_above_both_bars():
    def rows(after: float, pop: float, knn: float) -> list[dict]:
        return [{"version": "popularity", "kind": "baseline", HEADLINE: pop},
                {"version": "item_knn", "kind": "baseline", HEADLINE: knn},
                {"version": "v1", "kind": "model", HEADLINE: 0.1},
                {"version": "v2", "kind": "model", HEADLINE: after}]

    met = retrieval_summary(rows(0.30, 0.20, 0.25), "v1", "v2")
    assert met["retrieval_target_met"] and "MET" in met["retrieval_target"]
    assert met[f"{HEADLINE}_after_vs_popularity"] == pytest.approx(1.5)
    assert met[f"{HEADLINE}_before"] == 0.1
    below_pop = retrieval_summary(rows(0.25, 0.20, 0.20), "v1", "v2")  # 1.25x popularity
    below_knn = retrieval_summary(rows(0.30, 0.20, 0.30), "v1", "v2")  # ties item-kNN
    for s in (below_pop, below_knn):
        assert not s["retrieval_target_met"] and "NOT MET" in s["retrieval_target"]
    missing = retrieval_summary(rows(0.30, 0.20, 0.25), "v1", "v9")
    assert not missing["retrieval_target_met"] and missing[f"{HEADLINE}_after"] is None
