"""The broker harness: the local Apache Kafka node, its topics, and its durability."""

import os
import signal
import subprocess
import sys
import time

import pytest

from convcg.kafka.broker import create_topics, find_or_start_broker, topic_configs
from convcg.kafka.io import json_producer, read_topic


def test_the_harness_runs_apache_kafka_when_java_is_present(broker):
    if os.environ.get("KAFKA_BOOTSTRAP"):
        pytest.skip("an external broker was given")
    assert broker.kind == "apache-kafka"
    assert broker.ready_s is not None and broker.ready_s > 0
    from confluent_kafka.admin import AdminClient

    (node,) = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10).brokers.values()
    assert f"{node.host}:{node.port}" == broker.bootstrap


def test_topics_created_with_configured_partitions(broker, topics):
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    assert c.partitions_for_topic(topics.impressions) == {0, 1, 2}
    c.close()
    assert create_topics(broker.bootstrap, [topics.impressions], 3) == []  # idempotent


def test_changelogs_are_compacted_and_event_topics_retained(broker, topics):
    changelog = topic_configs(broker.bootstrap, topics.aggregates_changelog("item"))
    assert changelog["cleanup.policy"] == "compact"
    for name in (topics.impressions, topics.labels):
        config = topic_configs(broker.bootstrap, name)
        assert config["cleanup.policy"] == "delete"
        assert int(config["retention.ms"]) == 7 * 24 * 3600 * 1000
        assert int(config["retention.bytes"]) == 1 << 30


def test_produce_and_read_back(broker, topics):
    p = json_producer(broker.bootstrap)
    for i in range(50):
        p.send(topics.labels, key=str(i % 7).encode(), value=b'{"i": %d}' % i)
    p.flush()
    got = read_topic(broker.bootstrap, topics.labels, min_count=50, idle=0.2)
    assert sorted(r["i"] for r in got) == list(range(50))
    # fewer records than asked for: what is there, once the timeout passed (it waited forever)
    started = time.monotonic()
    assert len(read_topic(broker.bootstrap, topics.labels, timeout=2, min_count=51, idle=0.2)) == 50
    assert 2 <= time.monotonic() - started < 30


def test_without_java_the_error_says_what_to_install(monkeypatch, tmp_path):
    from convcg.kafka.distribution import KafkaUnavailable

    monkeypatch.delenv("KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no docker
    with pytest.raises(KafkaUnavailable, match="openjdk-17.*KAFKA_BOOTSTRAP"):
        find_or_start_broker(data_dir=tmp_path / "kafka")
    assert not (tmp_path / "kafka" / "log").exists()


def test_without_maven_missing_jars_say_what_to_install(monkeypatch, tmp_path):
    from convcg.kafka.distribution import KafkaUnavailable, ensure_jars

    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(KafkaUnavailable, match="no Maven.*KAFKA_BOOTSTRAP"):
        ensure_jars(tmp_path / "libs")


@pytest.mark.broker  # starts its own broker
def test_convcg_broker_prints_bootstrap_and_stops_on_sigterm(tmp_path):
    """`convcg broker --data-dir DIR` runs in the foreground, prints ``bootstrap=HOST:PORT`` once
    the broker answers, and stops the broker (and itself) cleanly on SIGTERM."""
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP"}
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "broker", "--data-dir", str(tmp_path / "kafka")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("bootstrap=127.0.0.1:"), (line, proc.stderr.read() if proc.poll() is not None else "")
        bootstrap = line.split("=", 1)[1]
        create_topics(bootstrap, ["probe"], 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert "broker stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    # nothing is left listening: a fresh start on the same folder keeps the topic
    b = find_or_start_broker(data_dir=tmp_path / "kafka")
    try:
        assert b.bootstrap == bootstrap
        from confluent_kafka.admin import AdminClient

        assert "probe" in AdminClient({"bootstrap.servers": b.bootstrap}).list_topics(timeout=10).topics
    finally:
        b.stop()


def test_a_cluster_id_never_starts_with_a_dash(monkeypatch):
    """A cluster id starting with "-" made the storage tool refuse to format the folder
    (``--cluster-id: expected one argument``): one start in 64 failed."""
    import uuid

    from convcg.kafka import local

    draws = iter([uuid.UUID(bytes=b"\xfb" + bytes(15)), uuid.UUID(bytes=bytes(16))])  # "-w..." then "AAA..."
    monkeypatch.setattr(local.uuid, "uuid4", lambda: next(draws))
    assert local.cluster_id() == "A" * 22
