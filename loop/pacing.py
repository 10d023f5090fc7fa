"""Steady, event-time-compressed pacing of the live replay (pure: the clock and the sleep are
passed in).

The live phase of `convcg up` sends the log at a steady ``rate`` events per wall second, in
event-time order: event ``i`` is due ``i / rate`` seconds after the start, whatever its event
time, so one wall second stands for however much event time those ``rate`` events span. The
label join and the aggregates decide on event time only, so the rate changes when labels and
features appear, never which ones.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence


def events_due(elapsed_s: float, rate: float, total: int) -> int:
    """How many of ``total`` events are due ``elapsed_s`` after the start (event 0 at 0 s)."""
    if elapsed_s < 0:
        return 0
    # the slack keeps this consistent with seconds_until_next under float rounding
    return min(total, math.floor(elapsed_s * rate + 1e-6) + 1)


def seconds_until_next(sent: int, elapsed_s: float, rate: float) -> float:
    """Wall seconds until event number ``sent`` is due (<= 0: due now)."""
    return sent / rate - elapsed_s


@dataclass
class PaceReport:
    """What a paced replay did: events sent, wall seconds, and its rate over 1 s windows."""

    rate: float
    sent: int
    wall_seconds: float
    event_seconds: float
    window_rates: list[float] = field(default_factory=list)

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    @property
    def event_seconds_per_wall_second(self) -> float:
        """How much event time one wall second of the replay stood for (on average)."""
        return self.event_seconds / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def as_dict(self) -> dict:
        w = sorted(self.window_rates)
        return {"target_events_per_s": self.rate, "achieved_events_per_s": round(self.achieved_rate, 1),
                "events": self.sent, "wall_seconds": round(self.wall_seconds, 2),
                "event_seconds_per_wall_second": round(self.event_seconds_per_wall_second, 1),
                "event_hours_per_wall_second": round(self.event_seconds_per_wall_second / 3600, 3),
                "slowest_1s_window_events_per_s": w[0] if w else None,
                "fastest_1s_window_events_per_s": w[-1] if w else None}


def window_rates(send_times: Sequence[float], counts: Sequence[int], window_s: float = 1.0) -> list[float]:
    """Events per second in each full ``window_s`` window from the first send (a send of
    ``counts[k]`` events at ``send_times[k]``, times relative to the start)."""
    if not send_times:
        return []
    end = send_times[-1]
    n_windows = int(end // window_s)
    bins = [0] * max(n_windows, 0)
    for t, c in zip(send_times, counts):
        k = int(t // window_s)
        if k < n_windows:
            bins[k] += c
    return [b / window_s for b in bins]


class SteadyPacer:
    """Sends ``events`` at ``rate`` per second: every ``tick_s`` the events due so far go to
    ``send(batch)`` in one call (a sender that fell behind catches up in the next batch, so the
    rate holds over the run). ``should_stop()`` ends the run early (checked every tick)."""

    def __init__(self, events: Sequence, rate: float, send: Callable[[Sequence], None],
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 tick_s: float = 0.01, should_stop: Callable[[], bool] = lambda: False) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        self.events, self.rate, self.send = events, float(rate), send
        self.clock, self.sleep, self.tick_s, self.should_stop = clock, sleep, tick_s, should_stop
        self.sent = 0
        self.send_times: list[float] = []
        self.send_counts: list[int] = []

    def run(self) -> PaceReport:
        total = len(self.events)
        start = self.clock()
        elapsed = 0.0
        while self.sent < total and not self.should_stop():
            elapsed = self.clock() - start
            due = events_due(elapsed, self.rate, total)
            if due > self.sent:
                batch = self.events[self.sent:due]
                self.send(batch)
                self.send_times.append(elapsed)
                self.send_counts.append(len(batch))
                self.sent = due
            wait = min(self.tick_s, seconds_until_next(self.sent, self.clock() - start, self.rate))
            if wait > 0 and self.sent < total:
                self.sleep(wait)
        wall = max(self.clock() - start, 1e-9)
        span = (self.events[self.sent - 1].ts - self.events[0].ts) if self.sent else 0.0
        return PaceReport(self.rate, self.sent, wall, span, window_rates(self.send_times, self.send_counts))
