"""The embedded Apache Kafka keeps what it acknowledged across a SIGKILL, and the label join
carries on through one: each test runs its own broker on its own folder and kills it."""

from __future__ import annotations

import threading
import time

import pytest

from bench.reliability.broker_durability import produce_through_a_broker_kill
from convcg.contract import Topics
from convcg.kafka.broker import create_topics
from convcg.kafka.io import read_topic
from convcg.kafka.local import start_local_kafka
from streams.label_join.labels import dedupe
from streams.label_join.rules import LabelRules
from streams.replay.datasets import load_log
from tests.support.label_reference import reference_label_ids
from tests.support.streams_harness import produce_events, start_worker

pytestmark = pytest.mark.broker
PARTITIONS = 3


def test_every_acknowledged_record_survives_a_sigkill_of_the_broker_once(tmp_path):
    run = produce_through_a_broker_kill(tmp_path, records=100_000, kill_at=0.4)
    assert 0 < run.acked_before_kill < run.records, "the kill must land mid-stream"
    assert run.acked == run.records and run.failed == 0
    assert run.lost == 0 and run.duplicated == 0 and run.present == run.records
    assert run.kill_to_next_ack_s > 0


def test_labels_through_a_broker_sigkill_equal_the_undisturbed_run(tmp_path):
    """A live replay into the label join; the broker is SIGKILLed when about a third of the
    labels are out and restarted on the same folder: after dedupe, exactly the reference
    labels, and a redelivered label is the same decision."""
    log = load_log("synthetic", n_users=400, n_items=300, n_advertisers=20, n_impressions=20_000, seed=4)
    expected = reference_label_ids(log.events, LabelRules())
    broker = start_local_kafka(tmp_path / "kafka", log_path=tmp_path / "broker.log")
    topics = Topics(prefix="dur-")
    create_topics(broker.bootstrap, topics.all(), PARTITIONS)
    restarted: list = []
    events, chunk = log.events, 1000

    def produce_live() -> None:  # a live stream: events keep coming while the broker is down
        for i in range(0, len(events), chunk):
            produce_events(broker.bootstrap, topics, events[i:i + chunk], PARTITIONS, close=False)
            time.sleep(0.3)
        produce_events(broker.bootstrap, topics, events[-1:], PARTITIONS, close=True)

    env = dict(CONVCG_STREAMS_IDLE_SOURCE_AFTER_S=600)  # the closing watermark ends the stream
    worker = start_worker(broker.bootstrap, topics, "dur-app", tmp_path / "worker.log", **env)
    producer = threading.Thread(target=produce_live)
    producer.start()
    try:
        deadline, n = time.monotonic() + 180, 0
        while time.monotonic() < deadline and n < len(expected) // 3:
            n = len(read_topic(broker.bootstrap, topics.labels, timeout=3, idle=0.2))
            time.sleep(0.2)
        assert 0 < n < len(expected), "the broker must be killed mid-stream"
        broker.process.kill()
        broker.process.wait()
        time.sleep(2.0)
        restarted.append(start_local_kafka(tmp_path / "kafka", log_path=tmp_path / "broker-restarted.log"))
        producer.join(300)
        deadline, got = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            assert worker.alive, f"the worker exited with {worker.returncode}"
            got = read_topic(broker.bootstrap, topics.labels, timeout=5, idle=0.5)
            if len(dedupe(got)) >= len(expected):
                time.sleep(1.0)
                got = read_topic(broker.bootstrap, topics.labels, timeout=5, idle=0.5)
                break
            time.sleep(1.0)
    finally:
        worker.stop()
        producer.join(60)
        broker.stop()
        for b in restarted:
            b.stop()
    assert {l["label_id"]: l["kind"] for l in dedupe(got)} == expected
    by_id: dict = {}
    for l in got:
        assert by_id.setdefault(l["label_id"], l) == l
