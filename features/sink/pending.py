"""What the sink has written online but not yet offline: the offline rows, already as Arrow
tables, the labels, and the offsets they cover.

The sink writes every poll online at once (freshness) and appends offline part files only every
``offline_flush_seconds``. Building the Arrow tables of a whole flush interval at flush time cost
~150 ms of CPU per 45,000 updates, in one piece, and held up the online writes behind it (a
visible step in the freshness tail). ``PendingOffline`` converts each poll's updates when they
arrive, so the work is spread evenly; a flush only concatenates, stamps the ingestion time and
writes. It also records the next offset to commit per partition, so a flush running beside the
next polls commits exactly what it wrote, never what was polled after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pyarrow as pa

from convcg.contract import Label
from features.repo.definitions import CREATED_TIMESTAMP
from features.sink.updates import TIMESTAMP_TYPE, group_by_entity, updates_table
from features.sink.write_errors import split_on_data_errors

_PLACEHOLDER = datetime(1970, 1, 1)  # replaced by the flush time (see stamp_created)


def stamp_created(table: pa.Table, created: datetime) -> pa.Table:
    """``table`` with its ingestion-time column set to ``created`` on every row."""
    i = table.schema.get_field_index(CREATED_TIMESTAMP)
    column = pa.array([created] * table.num_rows, type=TIMESTAMP_TYPE)
    return table.set_column(i, table.schema.field(i), column)


@dataclass
class PendingOffline:
    tables: dict[str, list[pa.Table]] = field(default_factory=dict)
    labels: list[tuple[int, Label]] = field(default_factory=list)  # (labels-topic partition, label)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # (topic, partition) -> next offset
    rows: int = 0
    since: float | None = None  # monotonic time of the first poll added
    created: datetime | None = None  # ingestion time stamped by the flush
    done: set[str] = field(default_factory=set)  # write stages finished (a retry repeats none)
    sources: dict[int, Any] = field(default_factory=dict)  # id(label) -> its consumer record
    dead_letters: list[bytes] = field(default_factory=list)  # labels the label table refused

    def add(self, updates: list, labels: list[tuple[int, Label]], records: list,
            now: float) -> list[tuple[Any, BaseException]]:
        """One poll: its valid updates and (partition, label) pairs, and every record's offset
        (valid or not: a dead-lettered record is handled once it is on the dead-letter topic).
        Returns the updates no offline row can hold, each with its error (the rest are kept)."""
        refused: list[tuple[Any, BaseException]] = []
        for entity, ups in group_by_entity(updates).items():
            tables, failed = split_on_data_errors(ups, lambda part, e=entity: updates_table(e, part, _PLACEHOLDER))
            self.tables.setdefault(entity, []).extend(tables)
            refused += failed
        self.labels += labels
        offsets = self.offsets
        for r in records:
            tp = (r.topic, r.partition)
            if r.offset >= offsets.get(tp, 0):
                offsets[tp] = r.offset + 1
        self.rows += len(updates) - len(refused) + len(labels)
        if self.since is None and records:
            self.since = now
        return refused

    def updates_tables(self, created: datetime) -> dict[str, pa.Table]:
        """One table per entity with every pending update, ``created`` stamped."""
        return {e: stamp_created(pa.concat_tables(ts), created) for e, ts in self.tables.items() if ts}

    def __bool__(self) -> bool:
        return bool(self.offsets)
