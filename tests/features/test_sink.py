"""The features sink against a real broker and real Feast stores (SQLite; Redis killed and
restarted under it)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path

import orjson
import pytest

from convcg.kafka.broker import free_port
from convcg.kafka.io import json_producer, read_topic
from convcg.kafka.settings import KafkaSettings
from features.offline import part_files, read_parts
from features.online.read import OnlineReader
from features.repo.definitions import stream_view_name
from features.settings import FeaturesSettings
from features.sink.updates import LABEL_SCHEMA, stream_schema
from features.sink.worker import BackgroundSink, FeastWriter, FeatureSink
from tests.support.feature_samples import full_update, sample_label

pytestmark = pytest.mark.broker
T = 1_700_000_000.0


def _settings(tmp_path: Path, topics, **kw) -> FeaturesSettings:
    return FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels",
                            kafka=KafkaSettings(topic_prefix=topics.prefix), project=f"t{uuid.uuid4().hex[:10]}",
                            consumer_group=f"g-{topics.prefix}", retry_initial_seconds=0.1,
                            retry_max_seconds=0.5, offline_flush_seconds=0.3, **kw)


def _send(bootstrap: str, topic: str, values: list) -> None:
    p = json_producer(bootstrap)
    for v in values:
        raw = v if isinstance(v, bytes) else orjson.dumps(v)
        p.send(topic, key=b"k", value=raw)
    p.flush()
    p.close()


def _wait_for(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _committed(bootstrap: str, group: str, topic: str) -> int:
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets(group).get(group, {})
    finally:
        admin.close()
    return sum(max(o.offset, 0) for tp, o in offsets.items() if tp.topic == topic)


def test_sink_writes_online_offline_labels_and_dead_letters(broker, topics, tmp_path):
    s = _settings(tmp_path, topics)
    updates = [full_update("user", f"u{i % 5}", T + i, i) for i in range(50)]
    updates += [full_update("item", "i1", T + 100, 7), full_update("advertiser", "a1", T + 100, 8)]
    lab = sample_label("imp1", "u1", "i1", "a1", T)
    bad = [b"{not json", orjson.dumps({"entity": "user", "entity_id": "u1"}),
           orjson.dumps({"entity": "shop", "entity_id": "x", "event_ts": T, "ingest_ms": 1, "features": {}})]
    _send(broker.bootstrap, topics.feature_updates, [u.to_dict() for u in updates] + bad)
    _send(broker.bootstrap, topics.labels, [lab.to_dict(), lab.to_dict(), b"[]"])  # at-least-once duplicate

    sink = FeatureSink(s, broker.bootstrap)
    bg = BackgroundSink(sink).start()
    try:
        reader = OnlineReader(sink.writer.store)
        # newest per entity wins: u4 last got i=49
        _wait_for(lambda: reader.read("user_stream", ["u4"])[0]["features"]["impressions_1h"] == 49, 60, "u4 online")
        got = reader.read("user_stream", ["u0", "u4", "nobody"])
        assert got[0]["features"]["impressions_1h"] == 45 and got[0]["event_ts"] == T + 45
        assert got[1]["features"]["last_engaged_items"] == ["i49"]
        assert got[2]["event_ts"] is None and got[2]["features"]["ctr_7d"] is None
        _wait_for(lambda: reader.read("advertiser_stream", ["a1"])[0]["features"]["impressions_1d"] == 8, 10, "a1")
        dead = read_topic(broker.bootstrap, topics.dead_letters, min_count=4, timeout=20)
        _wait_for(lambda: read_parts(s.labels_dir, LABEL_SCHEMA).num_rows, 10, "labels")
    finally:
        bg.stop()
    details = sorted(d["detail"] for d in dead)
    assert len(dead) == 4 and any("not valid JSON" in r for r in details)
    assert any("misses field" in r for r in details) and any("unknown entity 'shop'" in r for r in details)
    assert {d["reason"] for d in dead} <= {"malformed_json", "invalid_label", "invalid_feature_update"}
    assert all(d["component"] == "features-sink" and d["offset"] >= 0 for d in dead)
    # offline: every update kept (not only the newest), with ingestion time
    offline = read_parts(s.offline_root / stream_view_name("user"), stream_schema("user")).to_pandas()
    assert len(offline) == 50 and offline["created"].notna().all()
    labels = read_parts(s.labels_dir, LABEL_SCHEMA).to_pandas()
    assert labels["label_id"].tolist() == [lab.label_id]

    # a restarted sink (same group) re-reads nothing committed, and a re-sent label stays single
    _send(broker.bootstrap, topics.labels, [lab.to_dict(), sample_label("imp2", "u2", "i1", "a1", T).to_dict()])
    sink2 = FeatureSink(s, broker.bootstrap)
    bg2 = BackgroundSink(sink2).start()
    try:
        _wait_for(lambda: read_parts(s.labels_dir, LABEL_SCHEMA).num_rows == 2, 60, "second label")
    finally:
        bg2.stop()
    assert sorted(read_parts(s.labels_dir, LABEL_SCHEMA).column("label_id").to_pylist()) == [
        "imp1:negative", "imp2:negative"]
    assert len(part_files(s.offline_root / stream_view_name("user"))) == 1  # nothing re-appended


class ThrowawayRedis:
    """A real redis-server on a free port with no persistence, killed/restarted by the test."""

    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        _wait_for(lambda: _pings(redis.Redis(port=self.port)), 10, "redis up")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_sink_retries_while_redis_is_down_and_commits_only_after_writing(broker, topics, tmp_path):
    redis_server = ThrowawayRedis()
    redis_server.start()
    s = _settings(tmp_path, topics, online_store="redis", redis_connection=f"127.0.0.1:{redis_server.port}")
    try:
        writer = FeastWriter(s)  # repo applied while Redis is up
        redis_server.kill()  # ...then the store goes down before any update arrives
        updates = [full_update("item", f"i{i}", T + i, i) for i in range(30)]
        _send(broker.bootstrap, topics.feature_updates, [u.to_dict() for u in updates])
        sink = FeatureSink(s, broker.bootstrap, writer=writer)
        bg = BackgroundSink(sink).start()
        try:
            from features import metrics

            failures = metrics.SINK_WRITE_FAILURES.labels("online")
            before = failures._value.get()
            _wait_for(lambda: failures._value.get() >= before + 3, 60, "retried online writes")
            assert sink.batches_written == 0
            assert _committed(broker.bootstrap, s.consumer_group, topics.feature_updates) == 0
            assert part_files(s.offline_root / stream_view_name("item")) == []  # online first, nothing skipped ahead
            redis_server.start()  # store back (empty: no persistence)
            reader = OnlineReader(writer.store)
            _wait_for(lambda: _all_visible(reader, updates), 30, "all updates online after restart")
            _wait_for(lambda: _committed(broker.bootstrap, s.consumer_group, topics.feature_updates) == 30,
                      15, "offsets committed after the write")
        finally:
            bg.stop()
        offline = read_parts(s.offline_root / stream_view_name("item"), stream_schema("item"))
        assert offline.num_rows == 30
    finally:
        redis_server.kill()


def _all_visible(reader: OnlineReader, updates) -> bool:
    try:
        got = reader.read("item_stream", [u.entity_id for u in updates], ["impressions_1h"])
    except Exception:
        return False
    return [g["features"]["impressions_1h"] for g in got] == [u.features["impressions_1h"] for u in updates]


def test_a_failing_offline_write_keeps_online_fresh_and_commits_nothing_until_written(broker, topics, tmp_path):
    s = _settings(tmp_path, topics)
    writer = FeastWriter(s)
    view_dir = s.offline_root / stream_view_name("user")
    shutil.rmtree(view_dir)
    view_dir.write_text("not a directory")  # every offline append of user rows now fails
    from features import metrics

    failures = metrics.SINK_WRITE_FAILURES.labels("offline")
    before = failures._value.get()
    sink = FeatureSink(s, broker.bootstrap, writer=writer)
    bg = BackgroundSink(sink).start()
    try:
        reader = OnlineReader(writer.store)
        first = [full_update("user", f"u{i}", T + i, i) for i in range(10)]
        _send(broker.bootstrap, topics.feature_updates, [u.to_dict() for u in first])
        _wait_for(lambda: failures._value.get() >= before + 2, 60, "failing offline flushes")
        # polls go on beside the failing flush: later updates still reach the online store
        later = [full_update("user", f"v{i}", T + 100 + i, 100 + i) for i in range(10)]
        _send(broker.bootstrap, topics.feature_updates, [u.to_dict() for u in later])
        _wait_for(lambda: all(g["event_ts"] for g in reader.read("user_stream", [u.entity_id for u in later])),
                  30, "later updates online while offline fails")
        assert _committed(broker.bootstrap, s.consumer_group, topics.feature_updates) == 0
        view_dir.unlink()
        view_dir.mkdir()  # the offline store is back
        _wait_for(lambda: _committed(broker.bootstrap, s.consumer_group, topics.feature_updates) == 20,
                  30, "offsets committed once everything is offline")
    finally:
        bg.stop()
    offline = read_parts(view_dir, stream_schema("user")).to_pandas()
    assert sorted(offline["user_id"]) == sorted(u.entity_id for u in first + later)
