"""The point-in-time protocol over label rows (the trainer's quality gate) on a hand-made
label set: which queries exist, what each one sees, and the recall of a fixed ranking."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from training.evaluation.heldout import heldout_evaluation
from training.evaluation.protocol import STATIC, metric_name
from training.evaluation.scoring import grade
from training.evaluation.settings import ProtocolSettings
from training.history import dwell_ms_from_weight, interactions_from_labels

SCORES = {"a": 5.0, "b": 4.0, "c": 3.0, "d": 2.0, "e": 1.0}
CATALOG = pd.DataFrame({"item_id": list(SCORES), "advertiser_id": [f"adv-{i}" for i in SCORES],
                        "category": ["x"] * 5, "price": [1.0] * 5})


def label(kind: str, imp: str, user: str, item: str, imp_ts: float, label_ts: float, dwell_s: float = 0.0) -> dict:
    return dict(label_id=f"{imp}:{kind}", impression_id=imp, user_id=user, item_id=item, advertiser_id=f"adv-{item}",
                surface="home", impression_ts=imp_ts, label_ts=label_ts, kind=kind,
                conversion=int(kind in ("conversion", "correction")), conversion_value=0.0,
                engagement=int(kind == "engagement"),
                engagement_weight=1.0 + math.log1p(dwell_s) if kind == "engagement" else 0.0, position=1)


HISTORY = pd.DataFrame([
    label("engagement", "h1", "u1", "a", 9, 10, dwell_s=2.0),
    label("engagement", "h2", "u1", "b", 19, 20),
    label("correction", "h2", "u1", "b", 19, 60),
    label("engagement", "h3", "u3", "a", 29, 30),
    label("conversion", "h3", "u3", "a", 29, 35),
    label("negative", "h4", "u3", "e", 40, 3640),
])
HELDOUT = pd.DataFrame([
    label("engagement", "x1", "u1", "c", 99, 100),
    label("engagement", "x2", "u2", "e", 104, 105),
    label("engagement", "x3", "u2", "d", 109, 110),
    label("conversion", "x3", "u2", "d", 109, 500),  # known at 500, attributed to the click at 110
    label("negative", "x4", "u2", "b", 111, 3711),
])


def fixed_scorer(inter):
    scores = np.array([SCORES[i] for i in inter.item_ids])
    return lambda batch, task: np.tile(scores, (len(batch), 1))


def test_label_interactions_carry_engagements_dwell_and_attributed_conversions():
    inter = interactions_from_labels(pd.concat([HISTORY, HELDOUT]), CATALOG)
    assert list(inter.item_ids) == list(SCORES)  # catalog order
    assert len(inter.engagements) == 6 and len(inter.conversions) == 3  # negatives are not interactions
    eng = inter.engagements.assign(user=inter.user_ids[inter.engagements["user"]],
                                   item=inter.item_ids[inter.engagements["item"]])
    assert eng.loc[(eng["user"] == "u1") & (eng["item"] == "a"), "dwell_ms"].item() == pytest.approx(2000.0)
    conv = inter.conversions.assign(item=inter.item_ids[inter.conversions["item"]]).set_index("item")
    # a conversion's time is its impression's click, its known time its own label time
    assert conv.loc["d", "ts"] == 110 and conv.loc["d", "known_ts"] == 500
    assert conv.loc["b", "ts"] == 20 and conv.loc["b", "known_ts"] == 60
    assert dwell_ms_from_weight(np.array([0.0, 1.0])).tolist() == [0.0, 0.0]


def test_heldout_queries_are_the_heldout_positives_as_of_their_own_time():
    evaluation = heldout_evaluation(HISTORY, HELDOUT, CATALOG)
    inter = evaluation.inter
    conv = evaluation.queries[("conversion", "point-in-time")]
    assert inter.item_ids[conv.item].tolist() == ["d"] and conv.as_of.tolist() == [110.0]
    eng = evaluation.queries[("engagement", "point-in-time")]
    assert sorted(zip(inter.user_ids[eng.user], inter.item_ids[eng.item], eng.as_of)) == [
        ("u1", "c", 100.0), ("u2", "d", 110.0), ("u2", "e", 105.0)]
    # u2 has no engagement before the held-out slice starts (impression 99): cold
    assert dict(zip(inter.user_ids[eng.user], eng.cold)) == {"u1": False, "u2": True}


def test_fixed_ranking_on_the_heldout_labels_gives_the_known_recall():
    evaluation = heldout_evaluation(HISTORY, HELDOUT, CATALOG)
    m = grade(evaluation, fixed_scorer(evaluation.inter), ProtocolSettings(ks=(1, 3, 4, 5)))
    # engagement c for u1 at 100: a, b engaged before -> rank 0; e for u2 at 105: nothing
    # before -> rank 4; d for u2 at 110: e (engaged at 105) excluded -> rank 3
    assert (m["engagement_recall@1"], m["engagement_recall@4"], m["engagement_recall@5"]) == (1 / 3, 2 / 3, 1.0)
    # conversion d as of its click (110): e excluded -> rank 3
    assert (m["conversion_recall@3"], m["conversion_recall@4"]) == (0.0, 1.0)
    assert m["engagement_recall@1_warm"] == 1.0 and m["engagement_recall@4_cold"] == 0.5


def test_the_static_column_asks_the_same_positives_as_of_the_split():
    evaluation = heldout_evaluation(HISTORY, HELDOUT, CATALOG)
    for task in ("conversion", "engagement"):
        pit, static = evaluation.queries[(task, "point-in-time")], evaluation.queries[(task, STATIC)]
        assert (static.user.tolist(), static.item.tolist()) == (pit.user.tolist(), pit.item.tolist())
        assert set(static.as_of.tolist()) == {99.0}  # the held-out slice's first impression
    m = grade(evaluation, fixed_scorer(evaluation.inter), ProtocolSettings(ks=(1, 4)))
    # as of 99, u2 has engaged with nothing: e (engaged at 105) is not excluded for d, nor for anyone
    assert m[metric_name("engagement", 1, STATIC)] == 1 / 3 and m[metric_name("engagement", 4, STATIC)] == 2 / 3
    assert m[metric_name("conversion", 4, STATIC)] == 1.0
