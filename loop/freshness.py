"""Measured freshness of `convcg up` (pure: every input is a list of timestamps).

- feature freshness: a probe is a replayed event (its send time known) whose user's online row
  must show it; visible = the first HTTP lookup that returns it. See ``loop.probes``.
- label freshness: a label's time on the labels topic minus the wall time it became due, i.e.
  when the replay sent the first event at or past ``label_ts + allowed_lateness`` (the event
  time the watermark needs; for negatives ``label_ts`` is impression time + negative window).
- model freshness: a label's time on the topic -> the first model version trained on it started
  serving (first version created after the label arrived whose training data reaches its
  ``label_ts``).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

QUANTILES = (50, 90, 99)


def exact_percentiles(values: Iterable[float]) -> dict:
    """count, p50 / p90 / p99 (numpy's linear interpolation between order statistics) and max."""
    a = np.asarray(list(values), dtype=float)
    if a.size == 0:
        return {"count": 0, **{f"p{q}": None for q in QUANTILES}, "max": None}
    out = {"count": int(a.size)}
    for q in QUANTILES:
        out[f"p{q}"] = round(float(np.percentile(a, q)), 4)
    out["max"] = round(float(a.max()), 4)
    return out


class SendLog:
    """Wall time at which the replay sent the first event at or past each event time (events
    are sent in event-time order, so the newest event time sent only grows)."""

    def __init__(self) -> None:
        self.event_ts: list[float] = []
        self.wall: list[float] = []

    def record(self, max_event_ts: float, wall: float) -> None:
        if not self.event_ts or max_event_ts > self.event_ts[-1]:
            self.event_ts.append(max_event_ts)
            self.wall.append(wall)

    def latest(self) -> float | None:
        """The newest event time sent (None before the first send)."""
        return self.event_ts[-1] if self.event_ts else None

    def wall_when_reached(self, event_ts: float) -> float | None:
        """When the replay first sent an event with ts >= ``event_ts`` (None: never)."""
        i = bisect.bisect_left(self.event_ts, event_ts)
        return self.wall[i] if i < len(self.event_ts) else None


def label_delays(labels: Sequence[tuple[float, float]], sends: SendLog,
                 allowed_lateness_s: float) -> tuple[list[float], int]:
    """(delays, labels not due by the end) for ``(label_ts, on_topic_wall)`` pairs. Only labels
    that became due while ``sends`` was recording count (due before it: not measured here)."""
    delays, never = [], 0
    first = sends.event_ts[0] if sends.event_ts else math.inf
    for label_ts, on_topic in labels:
        due_ts = label_ts + allowed_lateness_s
        if due_ts < first:
            continue
        due = sends.wall_when_reached(due_ts)
        if due is None:
            never += 1
        else:
            delays.append(on_topic - due)
    return delays, never


@dataclass(frozen=True)
class ServedVersion:
    version: str
    created_wall: float       # the registry manifest's created_at
    label_ts_max: float       # newest label_ts in the version's training data
    serving_since: float      # first wall time the retrieval service answered with it


def model_delays(labels: Sequence[tuple[float, float]], versions: Sequence[ServedVersion],
                 since_wall: float = -math.inf) -> tuple[list[float], int]:
    """(delays, labels not yet in a serving model) for ``(label_ts, on_topic_wall)`` pairs that
    reached the topic at or after ``since_wall``."""
    ordered = sorted(versions, key=lambda v: v.created_wall)
    delays, pending = [], 0
    for label_ts, on_topic in labels:
        if on_topic < since_wall:
            continue
        first = next((v for v in ordered if v.created_wall >= on_topic and v.label_ts_max >= label_ts), None)
        if first is None:
            pending += 1
        else:
            delays.append(first.serving_since - on_topic)
    return delays, pending
