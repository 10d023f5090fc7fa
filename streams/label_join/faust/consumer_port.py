"""`FaustConsumerPort`: the label join's `ConsumerPort` (`streams.label_join.consumer_port`)
made on a running Faust app's consumer."""

from __future__ import annotations

import asyncio
from typing import Any, Hashable, Iterable


class FaustConsumerPort:
    """The port on a Faust app's consumer. Two calls have no public API in faust-streaming 0.15.3
    and use Faust's private consumer attributes, here only; tests/streams/label_join/faust/test_consumer_port.py runs
    them on a real Faust consumer, so an upgrade that removes or changes them fails there:

    * ``committed``: Faust has no ``Consumer.committed(tp)``. ``Consumer._committed_offset`` is
      filled by its seek to the committed offsets on assignment and by its commits. The public
      Monitor sensor's ``tp_committed_offsets`` is not the same (only commits made since the
      start, not the offsets the partitions started at, which the watermark needs), and
      aiokafka's public ``AIOKafkaConsumer.committed(tp)`` is reachable only through Faust's
      private ``Consumer._thread`` (and is a broker round trip: ``committed_on_broker``).
    * ``commit``: Faust's public ``Consumer.commit(topics)`` takes topics or partitions, not
      offsets, and commits only offsets Faust acked itself: none on these ``acks=False``
      topics. ``Consumer._commit_offsets(offsets)`` is the path below it: it skips partitions
      no longer assigned, flushes the producer, commits, and records the committed offsets.

    The generation id (``App.consumer_generation_id``) and ``Consumer.highwater`` are public."""

    def __init__(self, app: Any, bootstrap: str, group_id: str, partition_counts: dict[str, int] | None = None) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.partition_counts = dict(partition_counts or {})  # read from the broker at start

    @property
    def generation_id(self) -> int | None:
        return self.app.consumer_generation_id

    def tp(self, topic: str, partition: int) -> Hashable:
        from faust.types import TP

        return TP(topic, partition)

    def committed(self, tp: Hashable) -> int | None:
        # private: no public committed-offset getter in Faust (see the class docstring)
        known = self.app.consumer._committed_offset  # filled when Faust seeks, and by commits
        if tp not in known:
            return None
        offset = known[tp]
        return 0 if offset is None else offset  # Faust stores a committed 0 as None

    async def committed_on_broker(self, tps: Iterable[Hashable]) -> dict[Hashable, int | None]:
        return await asyncio.to_thread(_committed_offsets, self.bootstrap, self.group_id, list(tps))

    def highwater(self, tp: Hashable) -> int | None:
        try:
            return self.app.consumer.highwater(tp)
        except Exception:  # not assigned (any more) or no fetch answered yet
            return None

    async def commit(self, offsets: dict[Hashable, int]) -> None:
        # private: no public commit of explicit offsets in Faust (see the class docstring)
        await self.app.consumer._commit_offsets(offsets)

    async def read_range(self, tp: Hashable, start: int, end: int) -> list:
        from streams.label_join.faust.hole_read import read_hole

        return await asyncio.to_thread(read_hole, self.bootstrap, tp, start, end, self.generation_id)

    def partitions(self, topic: str) -> int | None:
        return self.partition_counts.get(topic)


def _committed_offsets(bootstrap: str, group_id: str, tps: list, timeout_s: float = 30.0) -> dict:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group_id, "enable.auto.commit": False})
    try:  # a lookup only: the consumer never subscribes, so it never joins the group
        found = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in tps], timeout=timeout_s)
    finally:
        consumer.close()
    by_key = {(tp.topic, tp.partition): tp for tp in tps}
    return {by_key[(f.topic, f.partition)]: (f.offset if f.offset >= 0 else None) for f in found}
