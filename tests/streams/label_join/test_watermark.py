import math

from streams.label_join.watermark import PartitionWatermark

TOPICS = ("imp", "eng", "conv")


def test_slowest_active_source_holds_the_watermark():
    wm = PartitionWatermark(allowed_lateness_s=10)
    wm.observe("imp", 1000, offset=99)
    wm.observe("eng", 500, offset=9)
    hw = {"imp": 200, "eng": 50, "conv": 0}
    assert wm.compute(hw, TOPICS) == 490  # engagements still have data to fetch


def test_caught_up_sources_do_not_hold_it_back():
    wm = PartitionWatermark(allowed_lateness_s=10)
    wm.observe("imp", 1000, offset=99)
    wm.observe("eng", 500, offset=49)
    assert wm.compute({"imp": 200, "eng": 50, "conv": 0}, TOPICS) == 990


def test_unseen_source_with_pending_data_blocks_until_read():
    wm = PartitionWatermark(allowed_lateness_s=0)
    wm.observe("imp", 1000, offset=0)
    assert wm.compute({"imp": 1, "eng": 5, "conv": 0}, TOPICS) == -math.inf
    # ...unless its committed offset says it was consumed to the end before a restart
    assert wm.compute({"imp": 1, "eng": 5, "conv": 0}, TOPICS, committed={"eng": 5}) == 1000


def test_unknown_highwater_holds_the_watermark():
    wm = PartitionWatermark(allowed_lateness_s=0)
    wm.observe("imp", 1000, offset=0)
    assert wm.compute({"imp": 1, "eng": None, "conv": 0}, TOPICS) == -math.inf


def test_never_moves_backwards():
    wm = PartitionWatermark(allowed_lateness_s=0)
    wm.observe("imp", 1000, offset=0)
    assert wm.compute({"imp": 1, "eng": 0, "conv": 0}, TOPICS) == 1000
    wm.observe("eng", 10, offset=0)
    assert wm.compute({"imp": 1, "eng": 100, "conv": 0}, TOPICS) == 1000


def test_caught_up_source_holds_until_idle_long_enough():
    wm = PartitionWatermark(allowed_lateness_s=0, idle_after_s=2.0, started=0.0)
    wm.observe("imp", 1000, offset=9, now=10.0)
    wm.observe("eng", 100, offset=4, now=10.0)
    hw = {"imp": 10, "eng": 5, "conv": 0}
    # engagements look caught up, but their highwater may be stale: they still hold it
    assert wm.compute(hw, TOPICS, now=11.0) == 100
    assert wm.compute(hw, TOPICS, now=12.5) == 1000  # quiet for 2.5 s: idle


def test_a_source_newest_time_is_clamped_to_the_clock_plus_the_skew():
    """A record stamped ahead of the clock cannot carry an idle partition's watermark there;
    only a trusted close may."""
    wm = PartitionWatermark(allowed_lateness_s=60.0, idle_after_s=0.0, max_skew_s=300.0)
    clock = 1_700_000_000.0
    wm.observe("imps", clock + 7 * 3600, 0, now=0.0, clock=clock)
    assert wm.newest == clock + 300.0
    assert wm.compute({"imps": 1}, ("imps",), now=10.0) == clock + 300.0 - 60.0
    wm.observe("imps", clock + 40 * 86400, 1, now=0.0, clock=clock, trusted=True)
    assert wm.compute({"imps": 2}, ("imps",), now=10.0) == clock + 40 * 86400 - 60.0
