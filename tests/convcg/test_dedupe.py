"""`SeenWithinHorizon`: duplicates found within the horizon, memory bounded by it."""

from __future__ import annotations

import pytest

from convcg.dedupe import SeenWithinHorizon

DAY = 86400.0


def test_duplicates_within_the_horizon_are_found_and_partitions_keep_their_own_time():
    seen = SeenWithinHorizon(horizon_s=DAY)
    assert seen.add(0, "a", 100.0) and not seen.add(0, "a", 100.0)
    assert seen.add(1, "b", 50 * DAY)  # partition 1 runs ahead...
    assert seen.add(0, "c", 200.0)  # ...and partition 0 is not refused for being behind it
    assert seen.add(None, "stored", 1.0) and not seen.add(0, "stored", 1.0)  # loaded at start
    assert "a" in seen and "b" in seen and "x" not in seen


def test_a_record_older_than_the_horizon_is_refused_and_counted():
    seen = SeenWithinHorizon(horizon_s=DAY)
    seen.add(0, "new", 10 * DAY)
    assert seen.too_old_for(0, 10 * DAY - DAY - 1) and not seen.too_old_for(None, 0.0)
    assert not seen.too_old_for(1, 0.0)  # a partition not read yet has no horizon
    assert seen.too_old == 0 and "old" not in seen  # asking changes nothing
    assert not seen.add(0, "old", 10 * DAY - DAY - 1) and seen.too_old == 1
    assert seen.add(0, "late-but-within", 10 * DAY - DAY + 1)


def test_memory_stays_bounded_by_about_two_horizons_of_ids():
    seen = SeenWithinHorizon(horizon_s=DAY)
    per_day = 5000
    for i in range(30 * per_day):  # 30 days of ids in time order
        assert seen.add(i % 2, f"id{i}", i * DAY / per_day)
        assert len(seen) <= 2 * 2 * (per_day + 1) + 2048
    # every id of the last horizon is still remembered: a redelivery of any of them is found
    assert all(not seen.add(i % 2, f"id{i}", i * DAY / per_day) for i in range(29 * per_day, 30 * per_day))


def test_the_horizon_must_be_positive():
    with pytest.raises(ValueError):
        SeenWithinHorizon(0)
