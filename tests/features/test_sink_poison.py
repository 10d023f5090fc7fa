"""Poison on the sink's topics (issue 28, item 4): records that decode but cannot be written
(an event time of 1e18, an int beyond int64) are dead-lettered with their reason, the rest is
written, and the committed offsets move past them: no endless retry, no wedge."""

from __future__ import annotations

import orjson
import pytest

from convcg.kafka.io import read_topic
from features.repo.definitions import stream_view_name
from features.offline import read_parts
from features.online.read import OnlineReader
from features.sink.worker import BackgroundSink, FeatureSink
from features.sink.updates import LABEL_SCHEMA, stream_schema
from tests.support.feature_samples import full_update, sample_label
from tests.features.test_sink import T, _committed, _send, _settings, _wait_for

pytestmark = pytest.mark.broker


def with_int(d: dict, path: tuple[str, ...], value: int) -> bytes:
    """``d`` as JSON with the field at ``path`` set to an integer JSON allows but orjson does
    not write (beyond 64 bits)."""
    target = d
    for k in path[:-1]:
        target = target[k]
    target[path[-1]] = "@@"
    return orjson.dumps(d).replace(b'"@@"', str(value).encode(), 1)


def poison_updates() -> list:
    far = full_update("user", "u-far", 1e18, 5).to_dict()  # year ~3e10: no datetime holds it
    big = with_int(full_update("user", "u-big", T, 5).to_dict(), ("features", "impressions_1h"), 2**63)
    late = full_update("user", "u-late", 1e11, 5).to_dict()  # year 5138: a clock gone wrong
    return [far, big, late]


def poison_labels() -> list:
    pos = with_int(sample_label("imp-pos", "u1", "i1", "a1", T).to_dict(), ("position",), 2**63)
    ts = sample_label("imp-ts", "u1", "i1", "a1", T).to_dict()
    ts["label_ts"] = 1e18  # would also move the partition's dedupe horizon past every later label
    neg = with_int(sample_label("imp-neg", "u1", "i1", "a1", T).to_dict(), ("engagement",), -(2**63) - 1)
    return [pos, ts, neg]


def test_poison_is_dead_lettered_at_the_door_and_commits_advance(broker, topics, tmp_path):
    s = _settings(tmp_path, topics)
    control = [full_update("user", f"u{i}", T + i, i) for i in range(5)]
    control_labels = [sample_label(f"imp{i}", f"u{i}", "i1", "a1", T + i) for i in range(3)]
    updates = [u.to_dict() for u in control[:2]] + poison_updates() + [u.to_dict() for u in control[2:]]
    labels = [control_labels[0].to_dict()] + poison_labels() + [lab.to_dict() for lab in control_labels[1:]]
    _send(broker.bootstrap, topics.feature_updates, updates)
    _send(broker.bootstrap, topics.labels, labels)
    sink = FeatureSink(s, broker.bootstrap)
    bg = BackgroundSink(sink).start()
    try:
        _wait_for(lambda: _committed(broker.bootstrap, s.consumer_group, topics.feature_updates) == len(updates),
                  40, "feature-update offsets committed past the poison")
        _wait_for(lambda: _committed(broker.bootstrap, s.consumer_group, topics.labels) == len(labels),
                  20, "label offsets committed past the poison")
        dead = read_topic(broker.bootstrap, topics.dead_letters, min_count=6, timeout=20)
        reader = OnlineReader(sink.writer.store)
        got = reader.read("user_stream", [u.entity_id for u in control])
    finally:
        bg.stop()
    assert [g["features"]["impressions_1h"] for g in got] == [u.features["impressions_1h"] for u in control]
    assert len(dead) == 6 and all(d["component"] == "features-sink" for d in dead)
    by_reason = sorted((d["topic"], d["reason"]) for d in dead)
    assert by_reason == sorted([(topics.feature_updates, "invalid_feature_update")] * 3
                               + [(topics.labels, "invalid_label")] * 3)
    details = " ".join(d["detail"] for d in dead)
    assert "event_ts" in details and "64-bit" in details and "label_ts" in details and "position" in details
    offline = read_parts(s.offline_root / stream_view_name("user"), stream_schema("user")).to_pandas()
    assert sorted(offline["user_id"]) == sorted(u.entity_id for u in control)
    stored = read_parts(s.labels_dir, LABEL_SCHEMA).column("label_id").to_pylist()
    assert sorted(stored) == sorted(lab.label_id for lab in control_labels)
    assert orjson.loads(orjson.dumps(dead[0]))  # plain JSON, as the dead-letter contract says
