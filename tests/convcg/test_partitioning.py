"""The contract's partitioner against real clients on the real broker: what a foreign producer on
librdkafka's default partitioner does to a co-partitioned join, and how it is caught."""

from __future__ import annotations

import base64
import time

import orjson
import pytest

from convcg.kafka.io import read_topic
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


@pytest.mark.broker
def test_a_foreign_producer_on_another_partitioner_is_dead_lettered_never_silently_unjoined(broker, topics, tmp_path):
    """One log from two clients: impressions from ours (murmur2), engagements from a librdkafka
    producer on its default partitioner. Every engagement either joins (its key happened to
    hash to the same partition) or is dead-lettered as wrong_partition; none goes missing."""
    from confluent_kafka import Producer

    from convcg.contract import Engagement, Impression, event_to_dict
    from streams.label_join.labels import dedupe
    from streams.label_join.rules import LabelRules
    from streams.replay.watermarks import closing_watermark, send_watermark
    from tests.support.streams_harness import produce_events, start_worker

    t0 = 1_700_000_000.0
    users = [f"user_{i}" for i in range(60)]
    impressions = [Impression(f"ei{i}", f"imp{i}", t0 + i, u, f"item{i}", "adv1", "home", 0) for i, u in enumerate(users)]
    produce_events(broker.bootstrap, topics, impressions, partitions=3, close=False)
    foreign = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})  # consistent_random (CRC32)
    for i, u in enumerate(users):
        eng = Engagement(f"ee{i}", f"imp{i}", t0 + i + 1, u, f"item{i}", "click", 5000)
        foreign.produce(topics.engagements, orjson.dumps(event_to_dict(eng)), u.encode())
    assert foreign.flush(30) == 0
    from convcg.kafka.io import json_producer

    ours = json_producer(broker.bootstrap)
    send_watermark(ours, topics, 3, closing_watermark(t0 + len(users) + 1, LabelRules()))
    ours.close()
    n_parts = 3
    misplaced = {f"imp{i}" for i, u in enumerate(users) if partition_for(u.encode(), n_parts) !=
                 _crc32_partition(u.encode(), n_parts)}
    assert misplaced, "the test needs keys the two partitioners place apart"

    worker = start_worker(broker.bootstrap, topics, f"{topics.prefix}app", tmp_path / "worker.log")
    try:
        deadline = time.monotonic() + 240
        labels: list = []
        while time.monotonic() < deadline and len(dedupe(labels)) < len(users):
            time.sleep(2)
            labels = read_topic(broker.bootstrap, topics.labels, timeout=5, idle=0.5)
        dead = read_topic(broker.bootstrap, topics.dead_letters, min_count=len(misplaced), timeout=60, idle=0.5)
    finally:
        worker.stop()
    kinds = {l["impression_id"]: l["kind"] for l in dedupe(labels)}
    engaged = {imp for imp, kind in kinds.items() if kind == "engagement"}
    wrong = {orjson.loads(base64.b64decode(d["original_b64"]))["impression_id"] for d in dead
             if d["reason"] == "wrong_partition" and d["topic"] == topics.engagements}
    assert wrong == misplaced and engaged == {f"imp{i}" for i in range(len(users))} - misplaced
    assert all(kinds[imp] == "negative" for imp in misplaced)  # its engagement never reached the join


def _crc32_partition(key: bytes, partitions: int) -> int:
    """librdkafka's consistent_random for a non-null key: CRC32 of the key modulo partitions."""
    import zlib

    return zlib.crc32(key) % partitions
