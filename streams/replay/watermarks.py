"""Producer watermarks: control records that move the join's event-time watermark.

A record ``{"watermark": ts}`` written to every partition of every event topic promises that
no event older than ``ts`` follows there. A replay ends with one past every window
(`closing_watermark`), so every pending decision (negatives, expiries) is taken.
"""

from __future__ import annotations

import orjson

from convcg.contract import Topics
from streams.label_join.rules import LabelRules


def closing_watermark(last_event_ts: float, rules: LabelRules) -> float:
    """A watermark after which every impression up to ``last_event_ts`` is fully decided."""
    return last_event_ts + max(rules.attribution_window_s, rules.negative_window_s, rules.orphan_ttl_s) \
        + rules.allowed_lateness_s + 1.0


def send_watermark(producer, topics: Topics, partitions: int, ts: float) -> None:
    """Write a producer watermark to every partition of the three event topics (then flush)."""
    body = orjson.dumps({"watermark": ts})
    for topic in topics.events:
        for p in range(partitions):
            producer.send(topic, value=body, partition=p)
    producer.flush()
