"""`OutputProducer`: the worker's fast, batched writer for labels, feature updates, dead
letters and join-state changelog records.

Faust's own producer path creates a future and a task per message, and nearly every event
yields a label or a state write; librdkafka (confluent-kafka) queues a message without either.
Durability is kept by ordering: the agent calls `flush()` (all queued messages acknowledged by
the broker) before it acks the batch's offsets, so an offset is never committed past unwritten
output. A delivery error raises, the worker stops, and restarts from the last committed offsets.
"""

from __future__ import annotations

import asyncio
import logging

from convcg.partitioning import LIBRDKAFKA_PARTITIONER

log = logging.getLogger(__name__)


class DeliveryFailed(RuntimeError):
    pass


class OutputProducer:
    def __init__(self, bootstrap: str, linger_ms: int = 5, **conf) -> None:
        from confluent_kafka import Producer

        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "linger.ms": linger_ms,
            "batch.size": 1 << 20,
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 1 << 20,
            "enable.idempotence": True,  # acks=all; a retried batch is neither duplicated nor reordered
            "partitioner": LIBRDKAFKA_PARTITIONER,  # the contract's placement (convcg.partitioning)
            # a delivery report (a Python call) only for a message that failed, not for each one
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
            **conf,
        })
        self._errors: list[str] = []
        self.sent = 0

    def _on_delivery(self, err, msg) -> None:  # called for failed deliveries only
        if err is not None:
            self._errors.append(f"{msg.topic()}[{msg.partition()}]: {err}")

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None) -> None:
        produce = self._producer.produce
        while True:
            try:
                if partition is None:
                    produce(topic, value, key)
                else:
                    produce(topic, value, key, partition)
                break
            except BufferError:  # local queue full: let librdkafka drain it
                self._producer.poll(0.05)
        self.sent += 1

    def poll(self) -> None:
        """Serve delivery reports without waiting (errors surface at the next flush)."""
        self._producer.poll(0)

    def flush_blocking(self, timeout: float = 60.0) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryFailed(f"{remaining} messages not delivered within {timeout}s")
        if self._errors:
            errors, self._errors = self._errors, []
            raise DeliveryFailed(f"{len(errors)} deliveries failed, e.g. {errors[0]}")

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait (off the event loop) until everything queued is acknowledged by the broker."""
        await asyncio.to_thread(self.flush_blocking, timeout)
