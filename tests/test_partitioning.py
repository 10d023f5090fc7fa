"""The contract's partitioner against real clients on the real broker: what a foreign producer on
librdkafka's default partitioner does to a co-partitioned join, and how it is caught."""

from __future__ import annotations

import pytest

from convcg.kafka_io import read_topic
from convcg.partitioning import LIBRDKAFKA_PARTITIONER, PlacementCheck, partition_for

KEYS = [f"user_{i}" for i in range(200)]


def test_placement_check_agrees_with_the_hash_and_stays_bounded():
    check = PlacementCheck(max_cached=16)
    for key in KEYS:
        p = partition_for(key.encode(), 3)
        assert 0 <= p < 3 and check.is_placed(key, p, 3) and not check.is_placed(key, (p + 1) % 3, 3)
        assert len(check._cache) <= 16


def _produce_with(broker, topic, partitioner: str | None) -> dict[str, int]:
    from confluent_kafka import Producer

    conf = {"bootstrap.servers": broker.bootstrap, "linger.ms": 5}
    if partitioner:
        conf["partitioner"] = partitioner
    producer = Producer(conf)
    for key in KEYS:
        producer.produce(topic, key.encode(), key.encode())
    assert producer.flush(30) == 0
    return {rec.key.decode(): rec.partition for rec in read_topic(broker.bootstrap, topic, decode=False,
                                                                   min_count=len(KEYS), timeout=30)}


@pytest.mark.broker
def test_the_contract_partitioner_is_murmur2_and_a_crc32_producer_misplaces_keys(broker, topics):
    from aiokafka.partitioner import DefaultPartitioner

    ours = _produce_with(broker, topics.impressions, LIBRDKAFKA_PARTITIONER)
    foreign = _produce_with(broker, topics.engagements, None)  # librdkafka's default: consistent_random
    n = 1 + max(ours.values())
    assert n > 1, "the test needs several partitions"
    assert all(partition_for(k.encode(), n) == p for k, p in ours.items())
    partitions = list(range(n))
    assert all(DefaultPartitioner()(k.encode(), partitions, partitions) == p for k, p in ours.items())
    misplaced = [k for k, p in foreign.items() if p != ours[k]]
    # CRC32 placement disagrees with murmur2 for about (n-1)/n of the keys: the join would miss them
    assert len(misplaced) > len(KEYS) // 3
    check = PlacementCheck()
    assert {k for k, p in foreign.items() if not check.is_placed(k, p, n)} == set(misplaced)
