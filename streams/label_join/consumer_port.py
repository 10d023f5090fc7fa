"""`ConsumerPort`: the consumer-facing calls the label join makes.

`JoinProcessor` reaches its consumer only through this interface: the consumer group's
generation, committed offsets, highwaters, committing, and reading a range of offsets back
from the broker. So the processor is tested without Faust (a stub port), and what it needs
from Faust's internals sits in `streams.label_join.faust.consumer_port.FaustConsumerPort`.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Protocol


class ConsumerPort(Protocol):
    @property
    def generation_id(self) -> int | None:
        """The consumer group generation of the current assignment."""

    def tp(self, topic: str, partition: int) -> Hashable:
        """The consumer's key of a topic-partition (as on its messages)."""

    def committed(self, tp: Hashable) -> int | None:
        """The committed offset the consumer started this partition at, or None when the
        consumer does not know one (there is none, or it has not loaded it yet)."""

    async def committed_on_broker(self, tps: Iterable[Hashable]) -> dict[Hashable, int | None]:
        """The group's committed offsets as the broker has them (None: no committed offset)."""

    def highwater(self, tp: Hashable) -> int | None:
        """The partition's end offset as of the last fetch (None: not known yet)."""

    async def commit(self, offsets: dict[Hashable, int]) -> None:
        """Commit these offsets (those of partitions no longer assigned are skipped)."""

    async def read_range(self, tp: Hashable, start: int, end: int) -> list:
        """The records at offsets [start, end) read from the broker, in order; offsets that
        hold no record are absent."""

    def partitions(self, topic: str) -> int | None:
        """How many partitions ``topic`` has (None: not known; placement is then not checked)."""
