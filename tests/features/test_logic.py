"""Pure logic of features/: validation, coalescing, dedup, point-in-time helpers, naming."""

from __future__ import annotations

import pandas as pd
import pytest

from convcg.contract import STREAM_FEATURES
from convcg.dedupe import SeenWithinHorizon
from convcg.validation import InvalidLabel, parse_label
from features import pit
from features.dataset import training_column, training_feature_refs
from features.online.read import UnknownFeature, UnknownFeatureView, resolve_features
from features.sink.updates import (
    InvalidMessage,
    latest_per_entity,
    new_labels,
    parse_feature_update,
    updates_table,
)
from tests.support.feature_samples import full_update, sample_label

T = 1_700_000_000.0


def test_parse_feature_update_accepts_the_wire_shape():
    u = full_update("user", "u1", T, 3)
    parsed = parse_feature_update(u.to_dict())
    assert parsed.features["impressions_1h"] == 3 and parsed.features["last_engaged_items"] == ["i3"]
    partial = parse_feature_update({**u.to_dict(), "features": {"ctr_7d": 0.5}})
    assert partial.features["ctr_7d"] == 0.5 and partial.features["impressions_1h"] is None


def test_parse_feature_update_lists_of_floats_are_floats_and_a_sum_overflow_is_not_an_error():
    big = [1.7e308, 1.7e308]  # each finite, their sum is not
    feats = {"last_engaged_ts": big, "last_engaged_dwell_ms": [5000, 0.5], "last_engaged_items": []}
    parsed = parse_feature_update({**full_update("user", "u1", T, 1).to_dict(), "features": feats})
    assert parsed.features["last_engaged_ts"] == big
    dwell = parsed.features["last_engaged_dwell_ms"]
    assert dwell == [5000.0, 0.5] and all(type(x) is float for x in dwell)
    assert parsed.features["last_engaged_items"] == []


@pytest.mark.parametrize("change, reason", [
    ({"entity": "shop"}, "unknown entity"),
    ({"entity_id": ""}, "entity_id"),
    ({"event_ts": "yesterday"}, "event_ts"),
    ({"features": {"bogus": 1}}, "unknown user feature"),
    ({"features": {"impressions_1h": 1.5}}, "integer"),
    ({"features": {"ctr_7d": float("nan")}}, "finite"),
    ({"features": {"last_engaged_items": [1, 2]}}, "list of strings"),
    ({"features": {"last_engaged_ts": ["x"]}}, "list of finite numbers"),
    ({"features": {"last_engaged_dwell_ms": [float("inf")]}}, "list of finite numbers"),
    ({"features": {"last_engaged_ts": [1.0, float("nan")]}}, "list of finite numbers"),
    ({"features": {"last_engaged_ts": [float("inf"), float("-inf")]}}, "list of finite numbers"),
    ({"features": {"last_engaged_ts": [1.0, True]}}, "list of finite numbers"),
    ({"features": {"last_engaged_ts": (1.0,)}}, "list of finite numbers"),
    ({"features": {"last_engaged_items": ["i1", None]}}, "list of strings"),
])
def test_parse_feature_update_rejects_with_reason(change, reason):
    d = {**full_update("user", "u1", T, 1).to_dict(), **change}
    with pytest.raises(InvalidMessage, match=reason):
        parse_feature_update(d)
    with pytest.raises(InvalidMessage, match="misses"):
        parse_feature_update({"entity": "user"})


def test_parse_label_checks_required_fields_and_types():
    lab = sample_label("imp1", "u1", "i1", "a1", T)
    assert parse_label(lab.to_dict()) == lab
    with pytest.raises(InvalidLabel, match="misses"):
        parse_label({"label_id": "x"})
    with pytest.raises(InvalidLabel, match="impression_ts"):
        parse_label({**lab.to_dict(), "impression_ts": "soon"})


def test_latest_per_entity_keeps_newest_event_time_not_arrival_order():
    a_new, a_old = full_update("user", "a", T + 10, 2), full_update("user", "a", T, 1)
    b = full_update("item", "a", T, 7)  # same id, other entity: kept apart
    out = latest_per_entity([a_new, a_old, b])
    assert {(u.entity, u.features["impressions_1h"]) for u in out} == {("user", 2), ("item", 7)}


def test_new_labels_dedupes_against_stored_and_within_batch():
    l1, l2 = sample_label("imp1", "u", "i", "a", T), sample_label("imp2", "u", "i", "a", T)
    seen = SeenWithinHorizon(horizon_s=86400.0)
    seen.add(0, l2.label_id, l2.label_ts)
    assert new_labels([(0, l1), (1, l2), (1, l1)], seen) == ([(0, l1)], 0)
    assert l1.label_id not in seen  # the caller remembers what it has written


def test_new_labels_refuses_a_label_older_than_its_partitions_horizon():
    seen = SeenWithinHorizon(horizon_s=86400.0)
    seen.add(0, "newest", T + 10 * 86400.0)
    old = sample_label("imp-old", "u", "i", "a", T)
    assert new_labels([(0, old)], seen) == ([], 1)
    assert new_labels([(1, old)], seen) == ([(1, old)], 0)  # other partitions keep their own time
    later = sample_label("imp-later", "u", "i", "a", T + 5 * 86400.0)
    assert new_labels([(1, later), (1, old), (2, old)], seen) == ([(1, later), (2, old)], 1)  # within a batch too


def test_updates_table_has_fixed_schema_even_with_nulls():
    from datetime import datetime, timezone

    u = parse_feature_update({**full_update("advertiser", "a1", T, 1).to_dict(), "features": {}})
    t = updates_table("advertiser", [u], datetime.now(timezone.utc))
    assert t.column_names[:3] == ["advertiser_id", "event_timestamp", "created"]
    assert t.schema.field("impressions_1h").type == "int64"
    assert len(t.column_names) == 3 + len(STREAM_FEATURES["advertiser"])


def _ts(s: float) -> pd.Timestamp:
    return pd.Timestamp(s, unit="s", tz="UTC")


def test_snapshot_cut_and_label_dedup():
    df = pd.DataFrame({"label_id": ["x", "x", "y", "z"],
                       "created": [_ts(1), _ts(2), _ts(3), _ts(10)]})
    cut = pit.dedupe_labels(pit.snapshot_cut(df, _ts(5)))
    assert sorted(cut["label_id"]) == ["x", "y"]
    assert cut.loc[cut.label_id == "x", "created"].item() == _ts(1)


def test_time_slices_never_split_equal_timestamps():
    ts = pd.Series([_ts(t) for t in (1, 2, 2, 2, 3, 4, 5)])
    slices = pit.time_slices(ts, 2)
    assert slices[0] == (0, 4) and slices[-1][1] == 7
    assert all(a < b for a, b in slices)
    assert [s[0] for s in slices[1:]] == [s[1] for s in slices[:-1]]


def test_prune_for_slice_keeps_exactly_the_candidate_rows():
    rows = pd.DataFrame({
        "user_id": ["u1", "u1", "u1", "u1", "u2", "u3"],
        "event_timestamp": [_ts(1), _ts(2), _ts(2), _ts(15), _ts(1), _ts(12)],
        "created": [_ts(1), _ts(2), _ts(9), _ts(15), _ts(1), _ts(12)],
        "v": [1, 2, 3, 4, 5, 6],
    })
    out = pit.prune_for_slice(rows, "user_id", ["u1", "u3"], _ts(10), _ts(20))
    # u1: newest before 10 is ts=2 with the later ingestion (v=3), plus v=4 inside; u2 not asked
    assert sorted(out["v"]) == [3, 4, 6]


def test_resolve_features_errors_name_the_problem():
    assert resolve_features("item_catalog", None) == ["advertiser_id", "category", "price"]
    with pytest.raises(UnknownFeatureView, match="unknown feature view 'nope'"):
        resolve_features("nope", None)
    with pytest.raises(UnknownFeature, match=r"\['bogus'\]"):
        resolve_features("user_stream", ["ctr_7d", "bogus"])


def test_training_column_naming_contract():
    assert training_column("user_stream__ctr_7d") == "user__ctr_7d"
    assert training_column("item_catalog__price") == "item__price"
    assert training_column("advertiser_stream__impressions_1d") == "advertiser__impressions_1d"
    refs = training_feature_refs(with_catalog=True)
    assert {"user_stream:last_engaged_items", "user_stream:last_engaged_ts", "user_stream:last_engaged_dwell_ms",
            "item_catalog:price"} <= set(refs)


def test_asof_join_rule_ties_ttl_and_empty_source():
    rows = pd.DataFrame({
        "item_id": ["a", "a", "a", "b"],
        "event_timestamp": [_ts(10), _ts(20), _ts(20), _ts(5)],
        "created": [_ts(10), _ts(30), _ts(25), _ts(5)],
        "v": [1, 2, 3, 4],
    })
    q = pd.DataFrame({"item_id": ["a", "a", "a", "b", "c"],
                      "event_timestamp": [_ts(9), _ts(20), _ts(60), _ts(100), _ts(100)]})
    out = pit.asof_join(q, rows, "item_id", ["v"], pd.Timedelta(seconds=50), prefix="item_stream")
    got = {(r.item_id, r.event_timestamp.timestamp()): r.item_stream__v for r in out.itertuples()}
    assert got[("a", 20.0)] == 2  # equal event time: the later ingestion wins
    assert pd.isna(got[("a", 9.0)])  # nothing at or before t=9
    assert got[("a", 60.0)] == 2 and pd.isna(got[("b", 100.0)])  # b's row is older than the TTL
    assert pd.isna(got[("c", 100.0)])
    empty = pit.asof_join(q, rows.iloc[:0], "item_id", ["v"], None, prefix="item_stream")
    assert len(empty) == 5 and empty["item_stream__v"].isna().all()
