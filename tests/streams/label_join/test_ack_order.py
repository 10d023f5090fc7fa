"""In-order commits: no offset is committed while a record before it is still held."""

import random

from streams.label_join.ack_order import GAP, REPEAT, InOrderAcks


def test_a_held_head_holds_back_every_later_offset_of_its_partition():
    acks = InOrderAcks()
    a = [acks.track("t-0", off) for off in range(10, 15)]
    b = [acks.track("t-1", off) for off in range(3)]
    for e in a[1:] + b:
        e.done = True
    assert acks.committable() == {"t-1": 3}  # t-0 waits for offset 10
    assert acks.committable() == {}  # and keeps waiting: nothing of t-0 was released
    a[0].done = True
    assert acks.committable() == {"t-0": 15}
    assert acks.committable() == {}  # the done prefix was released once
    acks.track("t-0", 15).done = True
    assert acks.committable() == {"t-0": 16}


def test_records_are_tracked_contiguously_from_the_consumer_position():
    acks = InOrderAcks()
    assert acks.track("t-0", 7, start=5) == GAP  # 5 and 6 were skipped: seek back to 5
    assert acks.expected("t-0") == 5
    assert acks.track("t-0", 8) == GAP
    first = acks.track("t-0", 5)
    assert acks.track("t-0", 6) is not GAP and acks.expected("t-0") == 7
    assert acks.committable() == {}
    first.done = True
    assert acks.committable() == {"t-0": 6}
    assert acks.track("t-1", 40) is not GAP  # no committed offset: the first record starts it


def test_random_completion_order_never_commits_past_an_undone_offset():
    rng = random.Random(7)
    acks = InOrderAcks()
    records = [(tp, off) for tp in "xyz" for off in range(700)]
    entries = {r: acks.track(*r) for r in sorted(records, key=lambda r: (r[1], r[0]))}
    committed: dict = {}
    for r in rng.sample(records, len(records)):
        entries[r].done = True
        committed.update(acks.committable())
        for tp, nxt in committed.items():  # everything of tp below nxt is done
            assert all(entries[(tp, o)].done for o in range(nxt))
    assert committed == {tp: 700 for tp in "xyz"}


def test_a_second_delivery_is_not_tracked_and_forgotten_partitions_are_never_committed():
    acks = InOrderAcks()
    e = acks.track("t-0", 4)
    assert acks.track("t-0", 4) == REPEAT  # Faust redelivered offset 4 after a seek
    assert acks.track("t-0", 3) == REPEAT
    assert acks.committable() == {}  # the first copy is still held
    e.done = True
    assert acks.committable() == {"t-0": 5}
    held = acks.track("t-0", 5)
    acks.forget({"t-0"})
    held.done = True
    assert acks.committable() == {}
    acks.track("t-0", 2, start=2).done = True  # reassigned: tracked afresh from the new position
    assert acks.committable() == {"t-0": 3}
