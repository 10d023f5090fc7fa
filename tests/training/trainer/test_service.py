"""The trainer service against the real broker: labels in, versions out."""

import base64
import threading
import time

import orjson
import pandas as pd
import pytest

from convcg.kafka.io import json_producer, read_topic
from convcg.kafka.settings import KafkaSettings
from convcg.validation import decode_label
from registry.store import ModelRegistry
from tests.support.tiny_models import tiny_config
from training.config import OptimConfig, TrainingSettings
from training.trainer.label_store import LabelStore
from training.trainer.service import TrainerService
from training.synthetic import synthetic_catalog, synthetic_labels


def test_parse_label_rejects_bad_input_with_reason():
    with pytest.raises(ValueError, match="not JSON"):
        decode_label(b"{oops")
    with pytest.raises(ValueError, match="misses field"):
        decode_label(orjson.dumps({"label_id": "x", "kind": "negative"}))
    with pytest.raises(ValueError, match="impression_ts.*must be a finite number"):
        decode_label(orjson.dumps({"label_id": "x", "user_id": "u", "item_id": "i", "advertiser_id": "a",
                                  "surface": "home", "impression_ts": "yesterday", "label_ts": 1.0,
                                  "kind": "negative", "impression_id": "imp"}))


def _produce(bootstrap, topic, rows):
    producer = json_producer(bootstrap)
    for row in rows:
        producer.send(topic, key=row["user_id"].encode(), value=orjson.dumps(row))
    producer.flush()
    producer.close()


def _wait_for(predicate, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.broker
def test_trainer_service_trains_then_finetunes_from_the_labels_topic(broker, topics, tmp_path):
    catalog = synthetic_catalog(150)
    catalog.to_parquet(tmp_path / "catalog.parquet")
    labels = synthetic_labels(catalog, n_users=40, n_labels=2400, seed=5)
    first, second = labels.iloc[:1500], labels.iloc[1500:]
    rows1 = first.to_dict("records")
    settings = TrainingSettings(
        kafka=KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix), consumer_group="",  # no group join
        registry_root=tmp_path / "registry", label_store=tmp_path / "store",
        catalog_path=tmp_path / "catalog.parquet", trigger_labels=len(rows1), trigger_seconds=3600,
        min_labels_first_train=500, gate_tolerance=1.0, gate_k=20, model=tiny_config(), retrain_growth=None,
        optim=OptimConfig(epochs=2, batch_size=256))
    # the first batch arrives with redeliveries and one malformed message
    _produce(broker.bootstrap, topics.labels, rows1 + rows1[:200])
    producer = json_producer(broker.bootstrap)
    producer.send(topics.labels, b"this is not a label")
    producer.flush()
    producer.close()

    service = TrainerService(settings)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), daemon=True)
    thread.start()
    registry = ModelRegistry(settings.registry_root)
    try:
        assert _wait_for(lambda: registry.current_version() == "v000001", 90), "no first version"
        assert registry.data_range("v000001")["mode"] == "full"
        # exactly the distinct labels were stored, duplicates were ignored
        assert service.metrics.duplicates._value.get() == 200
        assert len(LabelStore(settings.label_store).load()) == len(rows1)
        # new labels: once the trigger count is reached, a fine-tune is published (a count, not a
        # time trigger: a time trigger can fire while the batch is still arriving on a busy machine)
        service.settings = service.settings.model_copy(update={"trigger_labels": len(second)})
        _produce(broker.bootstrap, topics.labels, second.to_dict("records"))
        assert _wait_for(lambda: registry.current_version() == "v000002", 90), \
            [o.reason for o in service.outcomes]
        rng = registry.data_range("v000002")
        assert rng["mode"] == "finetune" and rng["base_version"] == "v000001"
        assert rng["new_labels"] + rng["heldout"]["labels"] == len(second)
        assert registry.load().embed_items(catalog).shape == (len(catalog), 16)
    finally:
        stop.set()
        thread.join(30)
    dead = read_topic(broker.bootstrap, topics.dead_letters, timeout=10, min_count=1)
    assert len(dead) == 1 and dead[0]["reason"] == "invalid_label" and "not JSON" in dead[0]["detail"]
    assert dead[0]["component"] == "trainer" and dead[0]["topic"] == topics.labels and dead[0]["offset"] >= 0
    assert base64.b64decode(dead[0]["original_b64"]) == b"this is not a label"
    assert len(LabelStore(settings.label_store).load()) == len(labels)


def test_the_trainers_label_ids_are_bounded_by_the_dedupe_horizon_also_across_a_restart(tmp_path):
    day = 86400.0
    settings = TrainingSettings(registry_root=tmp_path / "registry", label_store=tmp_path / "store",
                                dedupe_horizon_s=day)
    service = TrainerService(settings)
    per_day = 2000
    rows = [{"label_id": f"imp{i}:negative", "impression_id": f"imp{i}", "user_id": f"u{i % 50}",
             "item_id": "i1", "advertiser_id": "a1", "surface": "home", "impression_ts": i * day / per_day,
             "label_ts": i * day / per_day + 60, "kind": "negative"} for i in range(10 * per_day)]
    for i, row in enumerate(rows):
        assert service.accept(orjson.dumps(row), partition=i % 3)
        assert len(service.seen) <= 4 * per_day + 2048
    assert not service.accept(orjson.dumps(rows[-1]), partition=2)  # a redelivery within the horizon
    assert service.metrics.duplicates._value.get() == 1
    service.store.append(pd.DataFrame(service.pending))
    restarted = TrainerService(settings)
    assert per_day <= len(restarted.seen) <= per_day + 2  # only the newest horizon is loaded
    assert not restarted.accept(orjson.dumps(rows[-5]), partition=1)  # still recognised after the restart


@pytest.mark.broker
def test_a_due_step_takes_the_whole_backlog_up_to_max_step_labels(broker, topics, tmp_path):
    """A trainer behind the stream catches up in one step: once a step is due it consumes the
    labels already waiting on the topic, up to ``max_step_labels``, not one poll's worth."""
    catalog = synthetic_catalog(100)
    labels = synthetic_labels(catalog, n_users=30, n_labels=12_000, seed=2)
    _produce(broker.bootstrap, topics.labels, labels.to_dict("records"))
    settings = TrainingSettings(
        kafka=KafkaSettings(bootstrap=broker.bootstrap, topic_prefix=topics.prefix), consumer_group="",
        registry_root=tmp_path / "registry", label_store=tmp_path / "store", trigger_labels=1_000,
        max_step_labels=8_000, model=tiny_config())
    service = TrainerService(settings)
    try:
        def polled_until_due() -> bool:
            service.poll_once()
            return service.due()

        assert _wait_for(polled_until_due, 60)
        assert len(service.pending) < 8_000  # one poll: MAX_POLL_RECORDS at most
        service.take_waiting_labels()
        assert len(service.pending) == 8_000
        assert service.take_waiting_labels() == 0  # the cap holds
        assert len({row["label_id"] for row in service.pending}) == 8_000
    finally:
        service.close()


def test_the_trainer_process_runs_niced_below_the_streams(tmp_path):
    """`convcg trainer` lowers its own priority by ``trainer_niceness`` before it starts
    consuming: on two shared cores its fine-tunes must not take the streams' CPU."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "CONVCG_TRAINING_TRAINER_NICENESS": "7", "CONVCG_TRAINING_REGISTRY_ROOT": str(tmp_path / "r"),
           "CONVCG_TRAINING_LABEL_STORE": str(tmp_path / "s")}
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "trainer", "--bootstrap", "127.0.0.1:1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = os.getpriority(os.PRIO_PROCESS, 0)
        assert _wait_for(lambda: os.getpriority(os.PRIO_PROCESS, proc.pid) == min(base + 7, 19), 60)
        assert proc.poll() is None  # still running, waiting for its broker
    finally:
        proc.kill()
        proc.wait()
