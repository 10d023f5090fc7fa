"""Small, plain Kafka helpers shared by the CLI, benchmarks and tests (kafka-python)."""

from __future__ import annotations

import time
from typing import Iterator

import orjson


def json_producer(bootstrap: str, **overrides):
    from kafka import KafkaProducer

    conf = dict(bootstrap_servers=bootstrap, linger_ms=5, batch_size=256 * 1024, acks=1,
                max_request_size=8 * 1024 * 1024)
    conf.update(overrides)
    return KafkaProducer(**conf)


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0, decode: bool = True,
               min_count: int = 0, idle: float = 1.0) -> list:
    """Read a whole topic from the beginning without a consumer group.

    Stops once every partition is at its end offset and at least ``min_count`` records were
    read (polling for up to ``timeout`` seconds for more to arrive), then waits ``idle``
    seconds of quiet. Returns decoded JSON values (or raw ConsumerRecords).
    """
    return list(iter_topic(bootstrap, topic, timeout=timeout, decode=decode, min_count=min_count, idle=idle))


def iter_topic(bootstrap: str, topic: str, timeout: float = 10.0, decode: bool = True,
               min_count: int = 0, idle: float = 1.0) -> Iterator:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             max_partition_fetch_bytes=8 * 1024 * 1024)
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        n = 0
        last_data = time.monotonic()
        while True:
            batch = consumer.poll(timeout_ms=200, max_records=10000)
            for records in batch.values():
                for rec in records:
                    n += 1
                    yield orjson.loads(rec.value) if decode else rec
            now = time.monotonic()
            if batch:
                last_data = now
                continue
            ends = consumer.end_offsets(tps)
            at_end = all(consumer.position(tp) >= ends[tp] for tp in tps)
            if at_end and n >= min_count and now - last_data >= idle:
                return
            if now > deadline:
                return
    finally:
        consumer.close()
