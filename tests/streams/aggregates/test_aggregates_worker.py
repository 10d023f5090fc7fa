"""`convcg aggregates` against the real broker: the features it sends are exactly what the pure
`StreamingAggregator` computes over the same events, bad records are skipped and counted, and a
SIGKILL + restart (a rebuild from the log start) neither loses nor double-counts an event."""

from __future__ import annotations

import time
from collections import namedtuple

import orjson
import pytest

from convcg.contract import Impression, Topics, replace_event
from convcg.kafka.broker import free_port
from convcg.kafka.io import json_producer, read_topic
from convcg.kafka.settings import KafkaSettings
from convcg.metrics_scrape import fetch_samples, metric_sum
from convcg.partitioning import partition_for
from streams.aggregates.worker import AggregatesWorker
from streams.replay.datasets import load_log
from streams.settings import StreamSettings
from tests.support.streaming_aggregator import StreamingAggregator
from tests.support.streams_harness import produce_events, start_component

PARTITIONS = 3
Rec = namedtuple("Rec", "partition offset value timestamp")


def _log(seed: int):
    """A synthetic log cut to 6 days: the aggregator refuses events more than its dedupe
    horizon (8 days) behind the newest it has seen, and partitions are read side by side."""
    log = load_log("synthetic", n_users=300, n_items=200, n_advertisers=15, n_impressions=4000, seed=seed, days=3)
    t0 = min(e.ts for e in log.events)
    return [e for e in log.events if e.ts < t0 + 6 * 86400]


def _expected(events) -> dict[tuple[str, str], dict]:
    agg = StreamingAggregator()
    for e in events:
        agg.apply(e, 0)
    return {(u.entity, u.entity_id): {"event_ts": u.event_ts, "features": u.features} for u in agg.drain()}


def _latest(bootstrap: str, topics: Topics) -> dict[tuple[str, str], dict]:
    """The newest update per entity (one entity's updates share a partition, in send order)."""
    out = {}
    for u in read_topic(bootstrap, topics.feature_updates, timeout=5, idle=0.3):
        out[(u["entity"], u["entity_id"])] = {"event_ts": u["event_ts"], "features": u["features"]}
    return out


def _wait_for(bootstrap: str, topics: Topics, expected: dict, proc, timeout: float = 90.0) -> dict:
    deadline = time.monotonic() + timeout
    got: dict = {}
    while time.monotonic() < deadline:
        assert proc.alive, "convcg aggregates exited"
        got = _latest(bootstrap, topics)
        if got == expected:
            return got
        time.sleep(0.5)
    return got


def _metric(port: int, name: str, **labels: str) -> float:
    return metric_sum(fetch_samples(port, timeout=5), name, **labels)


def _start(bootstrap: str, topics: Topics, log_path, port: int):
    return start_component(["aggregates", "--metrics-port", str(port)], bootstrap, topics, log_path)


@pytest.mark.broker
def test_sends_exactly_the_pure_aggregates_and_skips_bad_records(broker, topics, tmp_path):
    events = _log(seed=1)
    produce_events(broker.bootstrap, topics, events, PARTITIONS)
    p = json_producer(broker.bootstrap)
    for raw in (b"{not json", b'{"event_id": "x"}', b"[1]"):  # the label join worker dead-letters these
        p.send(topics.impressions, key=b"u-bad", value=raw)
    p.flush()
    p.close()
    port = free_port()
    proc = _start(broker.bootstrap, topics, tmp_path / "agg.log", port)
    try:
        expected = _expected(events)
        assert {e for e, _ in expected} == {"user", "item", "advertiser"}
        got = _wait_for(broker.bootstrap, topics, expected, proc)
        assert got == expected
        assert _metric(port, "convcg_aggregates_skipped_total") == 3
        assert _metric(port, "convcg_aggregates_events_total", type="impression") == sum(
            type(e).__name__ == "Impression" for e in events)
        # live: a new event is counted and sent within the flush interval
        first = next(e for e in events if isinstance(e, Impression))
        later = replace_event(first, event_id="live-1", impression_id="live-imp-1", ts=max(e.ts for e in events) + 1)
        produce_events(broker.bootstrap, topics, [later], PARTITIONS, close=False)
        expected_live = _expected(events + [later])
        assert expected_live[("user", first.user_id)] != expected[("user", first.user_id)]
        assert _wait_for(broker.bootstrap, topics, expected_live, proc, timeout=30) == expected_live
    finally:
        proc.stop()


@pytest.mark.broker
def test_a_killed_aggregates_worker_rebuilds_exact_counts(broker, topics, tmp_path):
    events = _log(seed=3)
    half = len(events) // 2
    produce_events(broker.bootstrap, topics, events[:half], PARTITIONS, close=False)
    port = free_port()
    first = _start(broker.bootstrap, topics, tmp_path / "agg1.log", port)
    try:
        assert _wait_for(broker.bootstrap, topics, _expected(events[:half]), first) == _expected(events[:half])
    finally:
        first.stop(kill=True)  # SIGKILL: no clean shutdown, nothing saved
    produce_events(broker.bootstrap, topics, events[half:], PARTITIONS, close=False)
    again = _start(broker.bootstrap, topics, tmp_path / "agg2.log", free_port())
    try:
        expected = _expected(events)
        assert _wait_for(broker.bootstrap, topics, expected, again) == expected
    finally:
        again.stop()


class ListOutput:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    def send(self, topic, value, key=None, partition=None) -> None:
        self.sent.append((topic, value, key))

    def poll(self) -> None:
        pass

    async def flush(self) -> None:
        pass


def _route(worker, topic: str, output: ListOutput) -> None:
    """Hand the records one stage forwarded to the next stage, as the broker would (offsets
    counted per partition)."""
    offsets: dict[int, int] = {}
    records = []
    for t, value, key in output.sent:
        if t == topic:
            p = partition_for(key, PARTITIONS)
            records.append(Rec(p, offsets.setdefault(p, 0), value, 0))
            offsets[p] += 1
    for p in sorted(offsets):
        worker.count(topic, [r for r in records if r.partition == p], now=0.0)


def test_count_skips_bad_records_and_sends_one_update_per_entity():
    topics = Topics("x-")
    worker = AggregatesWorker(StreamSettings(kafka=KafkaSettings(topic_prefix="x-")), output=ListOutput())
    imp = {"event_id": "e1", "impression_id": "i1", "ts": 1_700_000_000.0, "user_id": "u1", "item_id": "it1",
           "advertiser_id": "a1", "surface": "home", "position": 0}
    records = [Rec(1, 10, orjson.dumps(imp), 1_700_000_000_500), Rec(1, 11, b"{bad", 0),
               Rec(1, 12, orjson.dumps({**imp, "event_id": "e2", "impression_id": "i2"}), 1_700_000_000_900),
               Rec(1, 13, orjson.dumps({"watermark": 1_700_000_100.0}), 0),
               Rec(1, 14, orjson.dumps(imp), 0)]  # a redelivered event: counted once
    counts = worker.count(topics.impressions, records, now=1_700_000_001.0)
    assert counts == {"impression": 3, "skipped:malformed_json": 1}
    _route(worker, topics.aggregates_by_item, worker.output)  # the user stage forwards by item,
    _route(worker, topics.aggregates_by_advertiser, worker.output)  # the item stage by advertiser
    assert worker.send_updates(now=1_700_000_001.0) == 3  # user, item, advertiser
    updates = [(t, v) for t, v, _ in worker.output.sent if t == topics.feature_updates]
    sent = {orjson.loads(v)["entity"]: orjson.loads(v) for _, v in updates}
    assert len(updates) == 3
    assert sent["user"]["features"]["impressions_1h"] == 2 and sent["user"]["ingest_ms"] == 1_700_000_000_900
    assert sent["advertiser"]["features"]["impressions_1h"] == 2  # the redelivery was not forwarded
    assert worker.send_updates(now=1_700_000_002.0) == 0  # nothing touched since


@pytest.mark.broker
def test_goes_live_when_the_last_offsets_of_a_partition_hold_no_record(broker, topics):
    """An event written in a transaction: the commit marker after it takes the partition's
    last offset, so no record reaches the end offset. The rebuild ends anyway (the consumer's
    position passes the marker) and the worker goes live and sends the event's features."""
    import asyncio

    from confluent_kafka import Producer

    from convcg.contract import event_to_dict

    events = _log(seed=5)[:300]
    produce_events(broker.bootstrap, topics, events, PARTITIONS, close=False)
    first = next(e for e in events if isinstance(e, Impression))
    late = replace_event(first, event_id="tx-1", impression_id="tx-imp-1", user_id="tx-user")
    tx = Producer({"bootstrap.servers": broker.bootstrap, "transactional.id": f"{topics.prefix}tx"})
    tx.init_transactions(30)
    tx.begin_transaction()
    tx.produce(topics.impressions, orjson.dumps(event_to_dict(late)), late.user_id.encode(), partition=0)
    tx.commit_transaction(30)
    worker = AggregatesWorker(StreamSettings(kafka=KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix)),
                              output=ListOutput())

    async def run_until_live(timeout_s: float = 30.0) -> None:
        task = asyncio.create_task(worker.run())
        deadline = time.monotonic() + timeout_s
        while not worker.live and not task.done() and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        await asyncio.sleep(2 * worker.settings.feature_flush_interval_s + 0.2)  # one flush after going live
        worker.stop_requested.set()
        await task

    asyncio.run(run_until_live())
    assert worker.live, "the rebuild never ended"
    updates = [orjson.loads(v) for t, v, _ in worker.output.sent if t == topics.feature_updates]
    users = {u["entity_id"] for u in updates if u["entity"] == "user"}
    assert "tx-user" in users and first.user_id in users


def test_caught_up_compares_the_consumers_positions_with_the_end_offsets():
    tp, other = ("x-impressions", 0), ("x-impressions", 1)
    targets = {tp: 16, other: 0}
    assert not AggregatesWorker.caught_up({tp: 15}, targets)
    assert AggregatesWorker.caught_up({tp: 16}, targets)  # an empty partition (end 0) needs no read
    assert AggregatesWorker.caught_up({tp: 17, other: 3}, targets)


def _wait_shared(ports: list[int], procs, stage_partitions: int = 3 * PARTITIONS, timeout: float = 90.0) -> None:
    """Until every worker holds stage partitions and together they hold all of them."""
    deadline = time.monotonic() + timeout
    held: list[float] = []
    while time.monotonic() < deadline:
        assert all(p.alive for p in procs), "convcg aggregates exited"
        try:
            held = [_metric(port, "convcg_aggregates_stage_partitions") for port in ports]
        except OSError:
            held = []
        if held and all(held) and sum(held) == stage_partitions:
            return
        time.sleep(0.5)
    raise AssertionError(f"the group never shared the partitions: {held}")


@pytest.mark.broker
def test_two_aggregates_workers_in_one_group_give_exactly_the_features_of_one(broker, topics, tmp_path):
    events = _log(seed=7)
    ports = [free_port(), free_port()]
    procs = [_start(broker.bootstrap, topics, tmp_path / f"agg{k}.log", port) for k, port in enumerate(ports)]
    try:
        _wait_shared(ports, procs)
        produce_events(broker.bootstrap, topics, events, PARTITIONS)
        expected = _expected(events)
        assert _wait_for(broker.bootstrap, topics, expected, procs[0]) == expected
        counted = [_metric(port, "convcg_aggregates_events_total") for port in ports]
        assert all(counted) and sum(counted) >= len(events), counted  # both did part of the work
    finally:
        for proc in procs:
            proc.stop()


@pytest.mark.broker
def test_one_of_two_workers_killed_mid_stream_and_restarted_gives_exactly_the_same_features(broker, topics, tmp_path):
    events = _log(seed=9)
    half = len(events) // 2
    ports = [free_port(), free_port()]
    procs = [_start(broker.bootstrap, topics, tmp_path / f"agg{k}.log", port) for k, port in enumerate(ports)]
    restarted = None
    try:
        _wait_shared(ports, procs)
        produce_events(broker.bootstrap, topics, events[:half], PARTITIONS, close=False)
        assert _wait_for(broker.bootstrap, topics, _expected(events[:half]), procs[0]) == _expected(events[:half])
        time.sleep(2 * StreamSettings().aggregates_state_flush_s + 0.5)  # the first half's state is committed
        produce_events(broker.bootstrap, topics, events[half:], PARTITIONS, close=False)
        procs[1].stop(kill=True)  # SIGKILL while the second half streams in: its last flush is lost
        restart_port = free_port()
        restarted = _start(broker.bootstrap, topics, tmp_path / "agg-restarted.log", restart_port)
        _wait_shared([ports[0], restart_port], [procs[0], restarted], timeout=120)
        expected = _expected(events)
        deadline = time.monotonic() + 60
        while _metric(restart_port, "convcg_aggregates_catchup_seconds") == 0 and time.monotonic() < deadline:
            time.sleep(0.5)  # the restarted worker went live: it has sent its entities' values
        assert _wait_for(broker.bootstrap, topics, expected, restarted) == expected
        restore_s = [_metric(port, "convcg_aggregates_restore_seconds") for port in (ports[0], restart_port)]
        print(f"\nrestore time from the changelogs: survivor {restore_s[0]:.2f}s, restarted worker {restore_s[1]:.2f}s")
        assert _metric(restart_port, "convcg_aggregates_restored_entities") > 0  # state came from the changelog
        # ... and the log was not re-read: at most the second half (the tail after the commit)
        assert _metric(restart_port, "convcg_aggregates_events_total") <= len(events) - half
    finally:
        for proc in (*procs, restarted):
            if proc is not None:
                proc.stop()
