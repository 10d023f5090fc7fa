from convcg.broker import create_topics, start_tansu
from convcg.kafka_io import json_producer, read_topic


def test_topics_created_with_configured_partitions(broker, topics):
    from kafka import KafkaConsumer

    c = KafkaConsumer(bootstrap_servers=broker.bootstrap)
    assert c.partitions_for_topic(topics.impressions) == {0, 1, 2}
    c.close()
    assert create_topics(broker.bootstrap, [topics.impressions], 3) == []  # idempotent


def test_produce_and_read_back(broker, topics):
    p = json_producer(broker.bootstrap)
    for i in range(50):
        p.send(topics.labels, key=str(i % 7).encode(), value=b'{"i": %d}' % i)
    p.flush()
    got = read_topic(broker.bootstrap, topics.labels, min_count=50, idle=0.2)
    assert sorted(r["i"] for r in got) == list(range(50))


def test_tansu_memory_only_storage_refused_clearly(tmp_path):
    import pytest

    with pytest.raises(RuntimeError, match="memory-only"):
        start_tansu(storage="postgres://postgres@127.0.0.1:5432/postgres", log_path=tmp_path / "t.log")
