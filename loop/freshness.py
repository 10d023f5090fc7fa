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
    #: when the trainer's step that made it took its labels (None: not recorded)
    step_started_wall: float | None = None
    #: when the refresher wrote its first index artifact (None: not recorded)
    index_written_wall: float | None = None


#: the legs of model freshness, in order; their sum is the whole delay
MODEL_FRESHNESS_PARTS = ("wait_for_step", "train_and_gate", "embed_and_index", "load_and_swap")


def model_delays(labels: Sequence[tuple[float, float]], versions: Sequence[ServedVersion],
                 since_wall: float = -math.inf) -> tuple[list[float], int]:
    """(delays, labels not yet in a serving model) for ``(label_ts, on_topic_wall)`` pairs that
    reached the topic at or after ``since_wall``."""
    firsts, pending = _first_versions(labels, versions, since_wall)
    return [v.serving_since - on_topic for on_topic, v in firsts], pending


def _first_versions(labels, versions, since_wall) -> tuple[list[tuple[float, ServedVersion]], int]:
    """``(on_topic_wall, first version trained on it)`` per counted label, and the pending count."""
    ordered = sorted(versions, key=lambda v: v.created_wall)
    firsts, pending = [], 0
    for label_ts, on_topic in labels:
        if on_topic < since_wall:
            continue
        first = next((v for v in ordered if v.created_wall >= on_topic and v.label_ts_max >= label_ts), None)
        if first is None:
            pending += 1
        else:
            firsts.append((on_topic, first))
    return firsts, pending


def model_delay_parts(labels: Sequence[tuple[float, float]], versions: Sequence[ServedVersion],
                      since_wall: float = -math.inf) -> dict[str, list[float]]:
    """Each counted label's model freshness cut into ``MODEL_FRESHNESS_PARTS``: waiting for the
    step that trained on it to take its labels, that step (training, gate, publish), the
    refresher (noticing the version, embedding the catalog, writing the index) and the retrieval
    service (loading and swapping it in). The parts of one label add up to its delay; a label
    that reached the trainer after its step had started (taken while the step gathered the
    backlog) waits 0. Labels whose version lacks a recorded time are left out."""
    parts: dict[str, list[float]] = {name: [] for name in MODEL_FRESHNESS_PARTS}
    firsts, _ = _first_versions(labels, versions, since_wall)
    for on_topic, v in firsts:
        if v.step_started_wall is None or v.index_written_wall is None:
            continue
        taken = max(v.step_started_wall, on_topic)
        index_written = max(v.index_written_wall, v.created_wall)
        for name, value in zip(MODEL_FRESHNESS_PARTS, (taken - on_topic, v.created_wall - taken,
                                                       index_written - v.created_wall,
                                                       v.serving_since - index_written)):
            parts[name].append(value)
    return parts
