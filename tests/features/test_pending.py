"""PendingOffline: rows kept for the next offline flush and the offsets a flush may commit."""

from __future__ import annotations

from collections import namedtuple
from datetime import datetime, timezone

from features.repo.definitions import CREATED_TIMESTAMP
from features.sink.pending import PendingOffline
from features.sink.updates import updates_table
from tests.support.feature_samples import full_update, sample_label

Rec = namedtuple("Rec", "topic partition offset")
T = 1_700_000_000.0


def test_offsets_are_the_next_to_read_per_partition_whatever_the_poll_order():
    p = PendingOffline()
    assert not p
    p.add([], [], [Rec("a", 0, 5), Rec("a", 0, 3), Rec("a", 1, 0)], now=10.0)
    p.add([], [], [Rec("a", 0, 4), Rec("b", 0, 9)], now=11.0)
    assert p and p.offsets == {("a", 0): 6, ("a", 1): 1, ("b", 0): 10}
    assert p.since == 10.0 and p.rows == 0


def test_tables_hold_every_update_with_the_flush_time_as_ingestion_time():
    p = PendingOffline()
    polls = [[full_update("user", f"u{i}", T + i, i) for i in range(3)],
             [full_update("user", "u0", T + 9, 9), full_update("item", "i1", T, 1)]]
    for k, ups in enumerate(polls):
        p.add(ups, [(0, sample_label(f"imp{k}", "u0", "i1", "a1", T))], [Rec("f", 0, k)], now=float(k))
    created = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
    tables = p.updates_tables(created)
    assert p.rows == 7 and len(p.labels) == 2
    expected = updates_table("user", polls[0] + polls[1][:1], created)
    assert tables["user"].equals(expected)
    assert tables["item"].num_rows == 1
    assert set(tables["item"].column(CREATED_TIMESTAMP).to_pylist()) == {created}
