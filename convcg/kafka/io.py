"""Plain Kafka helpers shared by the components, the CLI, benchmarks and tests, on librdkafka
(confluent-kafka): a JSON-bytes producer with the contract's partitioner, and a reader of a
whole topic without a consumer group.

The project's Kafka clients, one per role: aiokafka for asynchronous consumers (Faust is built
on it: the label join, the features sink, the aggregates), librdkafka for producing, for
synchronous readers in threads, and for the admin calls (``convcg.kafka.broker``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Iterator

import orjson

from convcg.partitioning import LIBRDKAFKA_PARTITIONER


@dataclass(frozen=True, slots=True)
class Record:
    """One record as read (``timestamp`` in milliseconds, as Kafka stores it)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


def record_of(message) -> Record:
    """A librdkafka message as a plain record."""
    return Record(message.topic(), message.partition(), message.offset(), message.key(), message.value(),
                  message.timestamp()[1])


def librdkafka_conf(**settings) -> dict:
    """librdkafka settings from Python names (``linger_ms`` -> ``linger.ms``)."""
    return {k.replace("_", "."): v for k, v in settings.items()}


class JsonProducer:
    """Sends bytes (JSON, by the callers' convention) keyed and partitioned as the contract says."""

    def __init__(self, bootstrap: str, **settings) -> None:
        from confluent_kafka import Producer

        conf = {"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.size": 256 * 1024,
                "message.max.bytes": 8 * 1024 * 1024, "partitioner": LIBRDKAFKA_PARTITIONER,
                # acks=all, and a retried batch is neither duplicated nor reordered (a broker restart)
                "enable.idempotence": True}
        conf.update(librdkafka_conf(**settings))
        self._producer = Producer(conf)
        self._errors: list[str] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> None:
        kwargs = {} if partition is None else {"partition": partition}
        if timestamp_ms is not None:
            kwargs["timestamp"] = timestamp_ms
        if headers:
            kwargs["headers"] = headers
        while True:
            try:
                self._producer.produce(topic, value, key, on_delivery=self._on_delivery, **kwargs)
                return
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)

    def flush(self, timeout: float = 60.0) -> int:
        """Wait until everything sent is acknowledged; raises if a delivery failed."""
        remaining = self._producer.flush(timeout)
        if self._errors:
            errors, self._errors = self._errors, []
            raise RuntimeError(f"{len(errors)} deliveries failed, e.g. {errors[0]}")
        if remaining:
            raise TimeoutError(f"{remaining} messages not delivered within {timeout}s")
        return 0

    def close(self) -> None:
        self.flush()


def json_producer(bootstrap: str, **settings) -> JsonProducer:
    return JsonProducer(bootstrap, **settings)


def read_topic(bootstrap: str, topic: str, timeout: float = 10.0, decode: bool = True,
               min_count: int = 0, idle: float = 1.0) -> list:
    """Read a whole topic from the beginning without a consumer group.

    Stops once every partition is at its end offset and at least ``min_count`` records were
    read (polling for up to ``timeout`` seconds for more to arrive), then waits ``idle``
    seconds of quiet. Returns decoded JSON values (or ``Record``s).
    """
    return list(iter_topic(bootstrap, topic, timeout=timeout, decode=decode, min_count=min_count, idle=idle))


def iter_topic(bootstrap: str, topic: str, timeout: float = 10.0, decode: bool = True,
               min_count: int = 0, idle: float = 1.0) -> Iterator:
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

    MOVING = (KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART)

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "convcg-reader", "enable.auto.commit": False,
                         "enable.partition.eof": False, "max.partition.fetch.bytes": 8 * 1024 * 1024})
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        parts = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
        if not parts:
            return
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
        deadline = time.monotonic() + timeout
        n = 0
        last_data = time.monotonic()
        positions = {p: 0 for p in parts}
        while True:
            messages = consumer.consume(10_000, timeout=0.2)
            got = False
            for msg in messages:
                if msg.error() is not None:
                    continue
                got = True
                n += 1
                positions[msg.partition()] = msg.offset() + 1
                yield orjson.loads(msg.value()) if decode else record_of(msg)
            now = time.monotonic()
            if got:
                last_data = now
                continue
            try:
                ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5, cached=False)[1]
                        for p in parts}
            except KafkaException as exc:  # a partition just created, moved or restarted: ask again
                if exc.args[0].code() not in MOVING or now > deadline:
                    raise
                time.sleep(0.1)
                continue
            for tp in consumer.position([TopicPartition(topic, p) for p in parts]):
                positions[tp.partition] = max(positions[tp.partition], tp.offset)  # past markers too
            at_end = all(positions[p] >= ends[p] for p in parts)
            if at_end and ((n >= min_count and now - last_data >= idle) or now > deadline):
                return  # everything read: enough of it, or no more came within the timeout
            if not at_end and now - last_data > timeout:
                return  # records said to be there never came: give up rather than hang
            if now > deadline:
                return
    finally:
        consumer.close()
