"""The trainer across a restart and around its commit: the dedupe horizon comes back per
partition, and its dead letters are on the topic before the offsets covering them are
committed (issue 28, point 10)."""

import time

import orjson
import pandas as pd
import pytest

from convcg.kafka.io import JsonProducer, json_producer, read_topic
from convcg.kafka.settings import KafkaSettings
from tests.features.test_sink import _committed
from training.config import TrainingSettings
from training.trainer.service import TrainerService

DAY = 86400.0


def _label(i: int, ts: float) -> dict:
    return {"label_id": f"imp{i}:negative", "impression_id": f"imp{i}", "user_id": f"u{i}", "item_id": "i1",
            "advertiser_id": "a1", "surface": "home", "impression_ts": ts, "label_ts": ts + 60, "kind": "negative"}


def test_a_restarted_trainer_keeps_each_partitions_horizon(tmp_path):
    settings = TrainingSettings(registry_root=tmp_path / "registry", label_store=tmp_path / "store",
                                dedupe_horizon_s=DAY)
    service = TrainerService(settings)
    assert service.accept(orjson.dumps(_label(1, 10 * DAY)), partition=0)  # partition 0 is at day 10
    assert service.accept(orjson.dumps(_label(2, 1 * DAY)), partition=1)  # partition 1 is at day 1
    service.store.append(pd.DataFrame(service.pending))
    assert set(service.store.load().columns) == set(service.pending[0]) - {"topic_partition"}

    restarted = TrainerService(settings)
    # two days behind partition 0's newest label: older than its horizon, refused as before the restart
    assert not restarted.accept(orjson.dumps(_label(3, 8 * DAY)), partition=0)
    assert restarted.seen.too_old == 1 and restarted.metrics.too_old._value.get() == 1
    # partition 1 is read at its own pace: a label of day 1.5 is new there
    assert restarted.accept(orjson.dumps(_label(4, 1.5 * DAY)), partition=1)


@pytest.mark.broker
def test_dead_letters_are_delivered_before_the_trainer_commits(broker, topics, tmp_path):
    settings = TrainingSettings(registry_root=tmp_path / "registry", label_store=tmp_path / "store",
                                kafka=KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix),
                                consumer_group=f"g-{topics.prefix}", min_labels_first_train=10_000)
    p = json_producer(broker.bootstrap)
    for raw in (orjson.dumps(_label(1, 1e9)), b"not a label", orjson.dumps(_label(2, 1e9))):
        p.send(topics.labels, raw, key=b"u1")
    p.flush()
    service = TrainerService(settings)
    service._connect()
    # a real producer that holds what it is sent for a minute unless flushed
    service._producer = JsonProducer(broker.bootstrap, linger_ms=60_000)
    try:
        deadline = time.monotonic() + 30
        while len(service.pending) < 2 and time.monotonic() < deadline:
            service.poll_once()
        assert len(service.pending) == 2 and service.metrics.invalid._value.get() == 1
        service.step()  # stores the labels, commits, then waits for more labels to train on
        committed = _committed(broker.bootstrap, settings.consumer_group, topics.labels)
        dead = read_topic(broker.bootstrap, topics.dead_letters, timeout=3, idle=0.5)
    finally:
        service.close()
    assert committed == 3
    assert [d["reason"] for d in dead] == ["invalid_label"]
