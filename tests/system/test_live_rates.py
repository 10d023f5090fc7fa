"""Replaying the same log at two steady rates gives the same labels: the join decides on event
time only. Offline (the streaming joiner fed the paced batches, per partition) and against the
real broker and `convcg worker` (warm-up prefix by `streams.replay.replay`, the rest by the live
phase's own sender at the pacer's rate)."""

from __future__ import annotations

import math
import time
import uuid
import zlib

import pytest

from convcg.contract import Topics
from convcg.kafka.broker import create_topics, free_port
from convcg.kafka.io import json_producer, read_topic
from convcg.metrics_scrape import fetch_samples, metric_sum
from loop.live import LiveSender, ServedItems
from loop.pacing import SteadyPacer
from loop.probes import FeatureProbes, ProbePicker
from streams.label_join.joiner import LabelJoiner, compute_labels
from streams.label_join.labels import dedupe
from streams.label_join.rules import LabelRules
from streams.replay.datasets import load_log
from streams.replay.replay import replay
from streams.replay.watermarks import closing_watermark, send_watermark
from tests.support.streams_harness import start_worker

RULES = LabelRules()
PARTITIONS = 3


class SimClock:
    def __init__(self) -> None:
        self.t = 0.0

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def paced_offline_labels(events, rate: float) -> dict[str, dict]:
    """The streaming joiner, one per partition, fed the batches the pacer sends at ``rate``;
    after each batch every partition advances to its newest event time - allowed lateness."""
    joiners = [LabelJoiner(RULES) for _ in range(PARTITIONS)]
    newest = [-math.inf] * PARTITIONS

    def send(batch):
        for e in batch:
            p = zlib.crc32(e.user_id.encode()) % PARTITIONS
            joiners[p].add(e)
            newest[p] = max(newest[p], e.ts)
        for p, j in enumerate(joiners):
            j.advance(newest[p] - RULES.allowed_lateness_s)

    clock = SimClock()
    SteadyPacer(events, rate, send, clock=clock.now, sleep=clock.sleep, tick_s=0.05).run()
    out = {}
    for j in joiners:
        j.advance(math.inf)
        out.update({lab.label_id: lab.to_dict() for lab in j.drain().labels})
    return out


def test_two_paced_schedules_give_the_same_labels_offline():
    events = load_log("movielens-100k").head(20_000).events
    slow, fast = paced_offline_labels(events, 300), paced_offline_labels(events, 20_000)
    assert len(slow) > 5_000
    assert slow == fast
    assert slow == {lab.label_id: lab.to_dict() for lab in compute_labels(events, RULES)}


def _events_total(port: int) -> float:
    return metric_sum(fetch_samples(port, timeout=2, missing_ok=True), "convcg_stream_events_total")


@pytest.mark.broker
def test_two_live_rates_through_the_broker_and_worker_give_the_same_labels(broker, tmp_path):
    log = load_log("movielens-100k").head(8_000)
    warm, live = log.events[:1_000], log.events[1_000:]
    rates = (700.0, 7_000.0)
    runs = []
    for rate in rates:
        topics = Topics(prefix=f"t{uuid.uuid4().hex[:8]}-")
        create_topics(broker.bootstrap, topics.all(), PARTITIONS)
        port = free_port()
        worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / f"worker-{rate:.0f}.log",
                              CONVCG_STREAMS_METRICS_PORT=port)
        runs.append((rate, topics, port, worker))
    try:
        for rate, topics, port, worker in runs:  # the warm-up prefix, then wait for a live worker
            replay(type(log)(log.name, warm, log.catalog), broker.bootstrap, topics, progress=False)
        deadline = time.monotonic() + 180
        while any(_events_total(port) < len(warm) for _, _, port, _ in runs):
            assert all(w.alive for *_, w in runs), "a worker exited"
            assert time.monotonic() < deadline, "workers did not consume the warm-up prefix"
            time.sleep(0.5)
        paces = {}
        for rate, topics, port, worker in runs:
            sender = LiveSender(broker.bootstrap, topics, ServedItems("http://127.0.0.1:1", 1, []), {},
                                FeatureProbes("http://127.0.0.1:1"), ProbePicker(1.0))
            paces[rate] = SteadyPacer(live, rate, sender).run()
            sender.close()
            assert not sender.errors
            p = json_producer(broker.bootstrap)
            send_watermark(p, topics, PARTITIONS, closing_watermark(live[-1].ts, RULES))
            p.close()
        for rate, pace in paces.items():
            assert abs(pace.achieved_rate / rate - 1) <= 0.10, (rate, pace.as_dict())
        expected = {lab.label_id: lab.to_dict() for lab in compute_labels(log.events, RULES)}
        got = {}
        for rate, topics, port, worker in runs:
            deadline = time.monotonic() + 120
            while True:
                labels = dedupe(read_topic(broker.bootstrap, topics.labels, timeout=5, idle=0.5))
                if len(labels) >= len(expected) or time.monotonic() > deadline:
                    break
                time.sleep(1.0)
            got[rate] = {lab["label_id"]: lab for lab in labels}
    finally:
        for *_, worker in runs:
            worker.stop()
    assert got[rates[0]] == got[rates[1]]
    assert set(got[rates[0]]) == set(expected)
