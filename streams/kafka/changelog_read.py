"""`read_partition`: one changelog partition's compacted contents as they are on the broker now,
for restoring a partition's state."""

from __future__ import annotations

import time


def read_partition(bootstrap: str, topic: str, partition: int, timeout_s: float = 120.0) -> dict:
    """A compacted view of one partition as it is now on the broker: the last value per key
    (None = deleted), keys and values as raw bytes.

    "Now" is the partition's high watermark when the call starts: every record the broker
    acknowledged before it (``acks=all``) lies below it. The read ends when the consumer's
    position reaches it, not at a record's offset, because compaction leaves gaps in offsets.
    """
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

    MOVING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "convcg-state-reader",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "enable.partition.eof": True})
    out: dict = {}
    deadline = time.monotonic() + timeout_s
    try:
        while True:  # a partition just created or just moved answers "not leader" for a moment
            try:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=timeout_s)
                break
            except KafkaException as exc:
                err = exc.args[0]
                if not (err.retriable() or err.code() in MOVING) or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if high <= low:
            return out
        consumer.assign([TopicPartition(topic, partition, low)])
        while True:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}[{partition}]: could not read up to offset {high} within {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out[msg.key()] = msg.value()
                if msg.offset() + 1 >= high:
                    return out
            elif msg is not None and msg.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(f"{topic}[{partition}]: read failed: {msg.error()}")
            elif msg is not None and consumer.position([TopicPartition(topic, partition)])[0].offset >= high:
                return out
    finally:
        consumer.close()
