"""The contract's partitioner.

Events are keyed by ``user_id`` (UTF-8) and a record belongs on partition
``(murmur2(key) & 0x7fffffff) % partitions``: Kafka's Java default, which aiokafka, kafka-python
and librdkafka's ``murmur2_random`` partitioner also use for non-null keys. The label join is
co-partitioned: a user's impressions, engagements and conversions must land on the same partition
number of their three topics. A producer on librdkafka's own default (``consistent_random``,
CRC32) places keys elsewhere; the worker checks every event against this function and
dead-letters a misplaced one with the reason ``wrong_partition`` instead of silently never
joining it.
"""

from __future__ import annotations

from aiokafka.partitioner import murmur2

PARTITIONER = "murmur2"
#: librdkafka's name for the same placement (``partitioner`` producer setting)
LIBRDKAFKA_PARTITIONER = "murmur2_random"


def partition_for(key: bytes, partitions: int) -> int:
    """The partition a record keyed ``key`` belongs on, among ``partitions``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class PlacementCheck:
    """``is_placed(user_id, partition, partitions)`` with a bounded cache: users repeat, and the
    hash is the dear part."""

    def __init__(self, max_cached: int = 1 << 16) -> None:
        self.max_cached = max_cached
        self._cache: dict[tuple[str, int], int] = {}

    def expected(self, user_id: str, partitions: int) -> int:
        key = (user_id, partitions)
        p = self._cache.get(key)
        if p is None:
            if len(self._cache) >= self.max_cached:
                self._cache.clear()
            p = self._cache[key] = partition_for(user_id.encode(), partitions)
        return p

    def is_placed(self, user_id: str, partition: int, partitions: int) -> bool:
        return self.expected(user_id, partitions) == partition
