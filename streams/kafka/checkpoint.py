"""`Checkpoint`: the one commit order of both stream workers.

The label join (`streams.label_join.processor`) and the aggregates worker
(`streams.aggregates.worker`) send their effects through one librdkafka producer
(`streams.kafka.output`) and commit their source offsets themselves. `Checkpoint.commit()` is
the only place that orders those steps, as Quix Streams' ``Checkpoint.commit()`` does
(produce the changelogs, flush the producer, commit the offsets), with the outputs flushed
before the state that records them:

1. **Outputs are on the broker.** Flush the producer: every output queued before the call
   (labels, dead letters, unattributed conversions, feature updates, repartition records) is
   acknowledged by the broker.
2. **The state records them.** Write the state changes (changelog records) that say those
   outputs were sent.
3. **The state is on the broker.** Flush the producer again.
4. **Which offsets are now safe.** Ask for the source offsets that may be committed: only
   now, since a record's offset becomes safe once its effects are on the broker.
5. **Commit them** (nothing to do when there are none).

A step runs only once the one before it succeeded: a delivery error raises at a flush and
the worker restarts from its last committed offsets. So a committed offset never passes an
output or a state write that is not on the broker, and no state says an output was sent that
is not: a crash between 1 and 3 re-decides and re-sends the same output (the same label_id,
the same feature values), which consumers deduplicate.

`PendingCommits` holds the label join's safe offsets between checkpoints, so that they are
committed at most every ``commit_interval_s``.
"""

from __future__ import annotations

import inspect
import time
from typing import Any, Awaitable, Callable, Hashable, Mapping, Protocol

#: source (topic-)partition -> the offset to commit (the next record to read)
Offsets = Mapping[Any, int]


class Flushable(Protocol):
    async def flush(self) -> None:
        """Return once every message queued so far is acknowledged by the broker (raise if not)."""


class Checkpoint:
    """Runs the commit order above on one producer; see the module docstring."""

    def __init__(self, producer: Flushable) -> None:
        self.producer = producer

    async def commit(self, write_state: Callable[[], Awaitable[None] | None], safe_offsets: Callable[[], Offsets],
                     commit_offsets: Callable[[Any], Awaitable[Any]]) -> Offsets:
        """1. flush the outputs, 2. ``write_state()`` (queue the changelog records), 3. flush
        them, 4. ``safe_offsets()``, 5. ``commit_offsets`` of them when there are any.
        Returns the offsets committed (empty: none)."""
        await self.producer.flush()  # 1
        written = write_state()  # 2
        if inspect.isawaitable(written):
            await written
        await self.producer.flush()  # 3
        offsets = safe_offsets()  # 4
        if offsets:
            await commit_offsets(offsets)  # 5
        return offsets


class PendingCommits:
    """The source offsets ready to commit, handed out at most every interval."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._offsets: dict[Hashable, int] = {}
        self._last = 0.0

    def add(self, offsets: dict[Hashable, int]) -> None:
        """Offsets below which every record is done (newer ones replace older ones)."""
        self._offsets.update(offsets)

    def forget(self, tps: set) -> None:
        """Never commit these partitions' pending offsets (revoked)."""
        for tp in tps:
            self._offsets.pop(tp, None)

    def due(self) -> bool:
        return bool(self._offsets) and time.monotonic() - self._last >= self.interval_s

    def take_due(self) -> dict[Hashable, int]:
        """Every pending offset if the interval is over (and starts the next one), else none."""
        if not self.due():
            return {}
        offsets, self._offsets = self._offsets, {}
        self._last = time.monotonic()
        return offsets
