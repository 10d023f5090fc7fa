"""Point-in-time training sets through Feast's historical retrieval: no value from after the
impression, and no late-ingested value leaking into a past snapshot (Feast issue #6615)."""

from __future__ import annotations

import time
import uuid
from datetime import datetime, timedelta, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from convcg.contract import ENTITIES
from convcg.kafka.settings import KafkaSettings
from features.dataset import build_training_set
from features.offline import write_part
from features.repo.definitions import stream_view_name
from features.settings import FeaturesSettings
from features.sink.updates import labels_table, updates_table
from tests.support.feature_samples import full_update, sample_catalog, sample_label

T = 1_700_000_000.0


def _settings(tmp_path, **kw) -> FeaturesSettings:
    return FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels",
                            catalog_path=tmp_path / "catalog" / "items.parquet",
                            datasets_dir=tmp_path / "datasets", project=f"t{uuid.uuid4().hex[:8]}", **kw)


def _reference_value(updates, entity, entity_id, at, ttl_s):
    """Naive point-in-time answer: newest update with event_ts <= at (and within the TTL)."""
    best = None
    for u in updates:
        if u.entity == entity and u.entity_id == entity_id and at - ttl_s <= u.event_ts <= at:
            if best is None or u.event_ts >= best.event_ts:
                best = u
    return None if best is None else best.features["impressions_1h"]


def test_training_set_matches_a_naive_point_in_time_join(tmp_path):
    """Random histories, tiny slices (to exercise the pruning), every cell checked."""
    s = _settings(tmp_path, dataset_slice_rows=7, feature_ttl_days=1.0)
    rng = np.random.default_rng(7)
    created = datetime.now(timezone.utc) - timedelta(minutes=10)
    ids = {"user": [f"u{i}" for i in range(6)], "item": [f"i{i}" for i in range(5)], "advertiser": ["a0", "a1"]}
    updates = []
    for e in ENTITIES:
        for k in range(40):  # unique values, so a wrong pick is visible; timestamps over 3 days
            updates.append(full_update(e, str(rng.choice(ids[e])), T + float(rng.integers(0, 3 * 86400)),
                                       1000 * ENTITIES.index(e) + k))
        ups = [u for u in updates if u.entity == e]
        write_part(s.offline_root / stream_view_name(e), updates_table(e, ups[:20], created))
        write_part(s.offline_root / stream_view_name(e), updates_table(e, ups[20:], created))
    labels = [sample_label(f"imp{n}", str(rng.choice(ids["user"])), str(rng.choice(ids["item"])),
                           str(rng.choice(ids["advertiser"])), T + float(rng.integers(0, 3 * 86400)))
              for n in range(60)]
    labels.append(labels[0])  # at-least-once duplicate in the table
    write_part(s.labels_dir, labels_table(labels, created))
    catalog = sample_catalog(ids["item"], 2, since=T - 86400)
    s.catalog_path.parent.mkdir(parents=True)
    catalog.to_parquet(s.catalog_path)

    result = build_training_set(s, progress=False, engine="feast")
    df = result.frame
    assert len(df) == 60 and df["label_id"].is_unique
    assert result.path.exists() and len(pd.read_parquet(result.path)) == 60
    for _, row in df.iterrows():
        for e in ENTITIES:
            want = _reference_value(updates, e, row[f"{e}_id"], row["impression_ts"], 86400)
            got = row[f"{e}__impressions_1h"]
            assert (pd.isna(got) and want is None) or got == want, (e, row["impression_id"], got, want)
        price = catalog.set_index("item_id").loc[row["item_id"], "price"]
        assert row["item__price"] == pytest.approx(price)
    assert {"user__ctr_7d", "item__cvr_7d", "advertiser__conversions_7d", "item__category"} <= set(df.columns)
    for _, row in df.iterrows():  # the list features are kept, as of the impression time too
        want = _reference_value(updates, "user", row["user_id"], row["impression_ts"], 86400)
        got = row["user__last_engaged_items"]
        assert (want is None and got is None) or list(got) == [f"i{want}"], (row["impression_id"], got, want)
        if want is not None:
            assert list(row["user__last_engaged_ts"]) == [want / 1000.0]
    # one big slice (no pruning) gives the same table as the tiny slices
    unsliced = build_training_set(s.model_copy(update={"dataset_slice_rows": 100_000}), progress=False, write=False,
                                  engine="feast")
    pd.testing.assert_frame_equal(unsliced.frame, df)
    # the merge_asof engine gives the same cells as Feast's join
    fast = build_training_set(s, progress=False, write=False, engine="asof").frame
    pd.testing.assert_frame_equal(fast, df, check_dtype=False)


@pytest.mark.broker
def test_no_leakage_either_way_through_the_real_sink(broker, topics, tmp_path):
    """(1) a value updated after the impression never appears in its row; (2) a value with an
    earlier event time that arrives after a snapshot was built does not change that snapshot."""
    from convcg.kafka.io import json_producer
    from features.sink.worker import BackgroundSink, FeatureSink

    s = _settings(tmp_path, kafka=KafkaSettings(topic_prefix=topics.prefix), consumer_group=f"g-{topics.prefix}",
                  offline_flush_seconds=0.2)
    producer = json_producer(broker.bootstrap)

    def send(topic, objs):
        for o in objs:
            producer.send(topic, key=b"u1", value=orjson.dumps(o.to_dict()))
        producer.flush()

    sink = FeatureSink(s, broker.bootstrap)
    bg = BackgroundSink(sink).start()
    try:
        send(topics.feature_updates, [full_update("user", "u1", T - 100, 1),
                                      full_update("user", "u1", T + 10, 99)])  # after the impression
        send(topics.labels, [sample_label("imp1", "u1", "i1", "a1", T)])
        _wait(lambda: sink.batches_written >= 1 and _label_count(s) == 1 and _offline_rows(s) == 2)
        time.sleep(0.01)
        snapshot = datetime.now(timezone.utc)
        time.sleep(0.01)
        first = build_training_set(s, as_of=snapshot, progress=False, engine="feast").frame
        assert first.loc[0, "user__impressions_1h"] == 1  # not 99: that value came after the impression

        # late arrival: event time before the impression, ingested after the snapshot
        send(topics.feature_updates, [full_update("user", "u1", T - 50, 5)])
        send(topics.labels, [sample_label("imp2", "u1", "i1", "a1", T + 5)])  # label after the snapshot
        _wait(lambda: _offline_rows(s) == 3 and _label_count(s) == 2)
    finally:
        bg.stop()
    rebuilt = build_training_set(s, as_of=snapshot, progress=False, engine="feast").frame
    pd.testing.assert_frame_equal(rebuilt, first)  # the past snapshot is reproducible
    later = build_training_set(s, as_of=datetime.now(timezone.utc), progress=False, engine="feast").frame.set_index("impression_id")
    assert later.loc["imp1", "user__impressions_1h"] == 5  # legitimately known now, still < impression
    assert later.loc["imp2", "user__impressions_1h"] == 5  # 99 (ts T+10) is after imp2 (T+5) too
    # the merge_asof engine applies the same snapshot cut and time rule
    pd.testing.assert_frame_equal(build_training_set(s, as_of=snapshot, progress=False, engine="asof").frame,
                                  first, check_dtype=False)


def _label_count(s) -> int:
    from features.offline import read_parts
    from features.sink.updates import LABEL_SCHEMA

    return read_parts(s.labels_dir, LABEL_SCHEMA).num_rows


def _offline_rows(s) -> int:
    from features.offline import read_parts
    from features.sink.updates import stream_schema

    return read_parts(s.offline_root / "user_stream", stream_schema("user")).num_rows


def _wait(pred, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the sink")
        time.sleep(0.1)
