"""The label rules as small pure functions and the settings they read.

Everything here is event-time only: no wall clock, no I/O. `LabelJoiner` (label_join.py)
applies these rules to a stream; the rules themselves are tested directly.
"""

from __future__ import annotations

import math

from pydantic import BaseModel, Field


class LabelRules(BaseModel):
    """Windows and weights of the label join (all durations in event-time seconds)."""

    negative_window_s: float = Field(3600.0, gt=0, description="served and nothing by impression_ts + this: a hard negative")
    attribution_window_s: float = Field(30 * 86400.0, gt=0, description="last-touch attribution window (Chapelle 2014: 30 days)")
    allowed_lateness_s: float = Field(60.0, ge=0, description="watermark = newest event time seen - this")
    engagement_weight_cap: float = Field(5.0, gt=0, description="cap of the click-duration weight")
    orphan_ttl_s: float = Field(3600.0, gt=0, description="how long an engagement waits for its impression")


def engagement_weight(dwell_ms: int, cap: float) -> float:
    """Click-duration weight of an engagement positive: 1 + log1p(dwell seconds), capped.

    A zero-dwell engagement (a save) still counts 1; a long click counts more, up to ``cap``.
    """
    seconds = max(dwell_ms, 0) / 1000.0
    return min(cap, 1.0 + math.log1p(seconds))


def negative_deadline(impression_ts: float, rules: LabelRules) -> float:
    """Event time at which an impression with nothing on it becomes a hard negative."""
    return impression_ts + rules.negative_window_s


def attribution_deadline(impression_ts: float, rules: LabelRules) -> float:
    """Last event time at which a conversion can still be attributed to the impression."""
    return impression_ts + rules.attribution_window_s


def within_attribution_window(impression_ts: float, conversion_ts: float, rules: LabelRules) -> bool:
    return impression_ts <= conversion_ts <= attribution_deadline(impression_ts, rules)


def conversion_kind(negative_already_emitted: bool) -> str:
    """A conversion on an impression already labelled negative corrects a fake negative."""
    return "correction" if negative_already_emitted else "conversion"


def last_touch(candidates: list[tuple[float, float, str]], conversion_ts: float, rules: LabelRules) -> str | None:
    """Pick the impression a click-id-less conversion is attributed to.

    ``candidates``: (engagement_ts, impression_ts, impression_id) of the user's engaged
    impressions of the item. The latest engagement at or before the conversion whose
    impression is inside the attribution window wins; ties break on impression id.
    """
    best: tuple[float, str] | None = None
    for eng_ts, imp_ts, imp_id in candidates:
        if eng_ts <= conversion_ts and within_attribution_window(imp_ts, conversion_ts, rules):
            key = (eng_ts, imp_id)
            if best is None or key > best:
                best = key
    return None if best is None else best[1]


# Ordering of work at the same event time: impressions, then engagements, then conversions,
# then timers (so "nothing by the deadline" sees an engagement exactly at the deadline).
RANK_IMPRESSION, RANK_ENGAGEMENT, RANK_CONVERSION, RANK_TIMER = 0, 1, 2, 3
