"""Both stream workers export, per source partition, their consumer lag and the age of the
oldest record they have not committed yet (issue 28, item 5): a partition whose commits stop
(a held record, a livelock) shows as an age that keeps growing."""

from __future__ import annotations

import time

import pytest

from convcg.kafka.broker import free_port
from convcg.contract import Engagement, Impression
from convcg.kafka.io import json_producer
from convcg.metrics_scrape import fetch_samples, metric_sum
from convcg.partitioning import partition_for
from streams.label_join.rules import LabelRules
from streams.replay.watermarks import closing_watermark, send_watermark
from tests.support.streams_harness import produce_events, start_component, start_worker

pytestmark = pytest.mark.broker
PARTITIONS = 3
AGE = "convcg_stream_oldest_uncommitted_age_seconds"


def wait_metric(port: int, proc, predicate, what: str, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    samples = []
    while time.monotonic() < deadline:
        assert proc.alive, proc.tail()
        samples = fetch_samples(port, missing_ok=True)
        if samples and predicate(samples):
            return samples
        time.sleep(0.5)
    raise AssertionError(f"{what}: {[s for s in samples if 'uncommitted' in s.name or 'lag' in s.name]}")


def test_the_label_join_exports_the_age_of_a_record_holding_its_commit(broker, topics, tmp_path):
    now = time.time()
    orphan = Engagement("e-orphan", "imp-never", now - 600, "user7", "item7", "click", 1000)
    p_orphan = str(partition_for(orphan.user_id.encode(), PARTITIONS))
    port = free_port()
    worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / "worker.log",
                          CONVCG_STREAMS_METRICS_PORT=port, CONVCG_STREAMS_IDLE_SOURCE_AFTER_S=0.5)
    try:
        produce_events(broker.bootstrap, topics, [orphan], PARTITIONS, close=False)
        # the engagement waits for its impression (an hour of event time): its offset is held
        held = lambda s: metric_sum(s, AGE, topic=topics.engagements, partition=p_orphan) > 3.0  # noqa: E731
        samples = wait_metric(port, worker, held, "the held engagement's age never grew")
        assert metric_sum(samples, "convcg_stream_consumer_lag", topic=topics.engagements, partition=p_orphan) == 0
        p = json_producer(broker.bootstrap)
        send_watermark(p, topics, PARTITIONS, closing_watermark(now, LabelRules()))  # decides it: dropped
        p.close()
        released = lambda s: metric_sum(s, AGE, topic=topics.engagements, partition=p_orphan) == 0  # noqa: E731
        wait_metric(port, worker, released, "the released engagement's age stayed")
    finally:
        worker.stop()


def test_the_aggregates_export_lag_and_uncommitted_age_per_partition(broker, topics, tmp_path):
    now = time.time()
    events = [Impression(f"e{k}", f"imp{k}", now - 600 + k, f"user{k}", f"item{k}", "adv", "home", 0)
              for k in range(30)]
    produce_events(broker.bootstrap, topics, events, PARTITIONS, close=False)
    port = free_port()
    proc = start_component(["aggregates", "--metrics-port", str(port)], broker.bootstrap, topics,
                           tmp_path / "agg.log", CONVCG_STREAMS_AGGREGATES_REPORT_EVERY_S=0.5)
    name = "convcg_aggregates_oldest_uncommitted_age_seconds"
    try:
        def settled(samples) -> bool:
            ages = [s for s in samples if s.name == name]
            lags = [s for s in samples if s.name == "convcg_aggregates_consumer_lag"]
            return (len(ages) == 5 * PARTITIONS and all(s.value == 0 for s in ages)
                    and len(lags) == 5 * PARTITIONS and all(s.value == 0 for s in lags)
                    and metric_sum(samples, "convcg_aggregates_events_total") == len(events))

        wait_metric(port, proc, settled, "the aggregates never reported every partition committed")
    finally:
        proc.stop()
