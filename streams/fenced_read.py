"""`read_partition_through_fence`: one partition's compacted contents as they are on the broker
now, for restoring a partition's join state from its changelog."""

from __future__ import annotations

import time

FENCE_PREFIX = "__fence__:"


def read_partition_through_fence(bootstrap: str, topic: str, partition: int, timeout_s: float = 120.0) -> dict:
    """A compacted view of one partition as it is now on the broker: the last value per key
    (None = deleted), keys and values as raw bytes.

    "Now" is marked by a fence: a record with a unique key this function writes to the
    partition itself, then reads up to; every record acknowledged before the call lies before
    it. Reading up to the partition's end offset instead is not safe on the bundled Tansu: its
    ListOffsets answers the *first* offset of the newest record batch + 1, so the rest of that
    batch (the last state writes before a crash, all flushed in one batch) would be cut off
    (`tests/test_fenced_read.py` writes batches that way and reads them all back). The fence
    is deleted (a tombstone) after the read and never appears in the result; a value whose
    key starts with ``FENCE_PREFIX`` is not state.
    """
    import uuid

    import orjson
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    fence = orjson.dumps(f"{FENCE_PREFIX}{uuid.uuid4().hex}")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 0})
    producer.produce(topic, orjson.dumps({"fence": True}), fence, partition=partition)
    if producer.flush(timeout_s):
        raise TimeoutError(f"{topic}[{partition}]: could not write the read fence within {timeout_s}s")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "convcg-state-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    out: dict = {}
    try:
        consumer.assign([TopicPartition(topic, partition, -2)])  # -2: the log start
        deadline = time.monotonic() + timeout_s
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: the read fence did not come back within {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise RuntimeError(f"{topic}[{partition}]: read failed: {msg.error()}")
            if msg.key() == fence:
                break
            out[msg.key()] = msg.value()
    finally:
        consumer.close()
        producer.produce(topic, None, fence, partition=partition)  # tombstone: the fence is gone
        producer.flush(10)
    earlier_fences = orjson.dumps(FENCE_PREFIX)[:-1]  # the JSON string's opening quote and prefix
    return {k: v for k, v in out.items() if not (k and k.startswith(earlier_fences))}
