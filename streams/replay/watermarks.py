"""Producer watermarks: control records that move the join's event-time watermark.

A record ``{"watermark": ts}`` written to every partition of every event topic promises that
no event older than ``ts`` follows there. A replay ends with one past every window
(`closing_watermark`), so every pending decision (negatives, expiries) is taken.

A closing watermark lies past every label window, so far ahead of the clock when the events
are recent: it carries the header `convcg.validation.TRUSTED_CLOSE_HEADER` (`CLOSE_HEADERS`),
which the label join honours when its settings allow it (``trusted_close``); any other producer
watermark is bounded by the clock like an event.
"""

from __future__ import annotations

import orjson

from convcg.contract import Topics
from convcg.validation import TRUSTED_CLOSE_HEADER
from streams.label_join.rules import LabelRules


def closing_watermark(last_event_ts: float, rules: LabelRules) -> float:
    """A watermark after which every impression up to ``last_event_ts`` is fully decided."""
    return last_event_ts + max(rules.attribution_window_s, rules.negative_window_s, rules.orphan_ttl_s) \
        + rules.allowed_lateness_s + 1.0


#: the headers of a closing watermark (a trusted close)
CLOSE_HEADERS = [(TRUSTED_CLOSE_HEADER, b"1")]


def send_watermark(producer, topics: Topics, partitions: int, ts: float, trusted_close: bool = True) -> None:
    """Write a producer watermark to every partition of the three event topics (then flush);
    ``trusted_close``: as a trusted close (`CLOSE_HEADERS`), as `convcg replay --close` does."""
    body = orjson.dumps({"watermark": ts})
    headers = CLOSE_HEADERS if trusted_close else None
    for topic in topics.events:
        for p in range(partitions):
            producer.send(topic, value=body, partition=p, headers=headers)
    producer.flush()
