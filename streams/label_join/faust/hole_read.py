"""`read_hole`: fetch records the consumer skipped, straight from the broker.

faust-streaming 0.15.3 can skip records at start-up: its recovery resumes the partitions,
seeks to the committed offsets and only then resumes the flow, and records fetched in between
are dropped by the stream as "flow not active" while its fetcher's read offset moves past
them. A seek back does not bring them: records already fetched keep moving the read offset,
and Faust then drops the refetched ones as duplicates. So the worker reads such a hole itself
with a plain consumer (no group, no commits) and processes its records in order before the
record that revealed it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class HoleRecord:
    """The fields of a Faust message the join reads."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float  # seconds, as Faust's
    tp: Any
    generation_id: int | None
    headers: list | None = None


def read_hole(bootstrap: str, tp: Any, start: int, end: int, generation_id: int | None,
              timeout_s: float = 30.0) -> list[HoleRecord]:
    """The records at offsets [start, end) of ``tp`` (topic, partition), in order. Offsets that
    hold no record (e.g. transaction markers) are simply absent."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "convcg-hole-reader",
                         "enable.auto.commit": False, "enable.partition.eof": True,
                         "auto.offset.reset": "earliest"})  # a hole from 0 starts at the log start
    out: list[HoleRecord] = []
    try:
        consumer.assign([TopicPartition(tp.topic, tp.partition, start)])
        deadline = time.monotonic() + timeout_s
        position = start
        while position < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{tp}: could not read offsets {start}..{end - 1} within {timeout_s}s")
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() == KafkaError._PARTITION_EOF:
                    break
                raise RuntimeError(f"{tp}: reading the hole failed: {msg.error()}")
            if msg.offset() >= end:
                break
            position = msg.offset() + 1
            out.append(HoleRecord(tp.topic, tp.partition, msg.offset(), msg.key(), msg.value(),
                                  msg.timestamp()[1] / 1000.0, tp, generation_id, msg.headers()))
    finally:
        consumer.close()
    return out

