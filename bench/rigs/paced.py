"""A steady load: send items at a fixed rate in short ticks, as the freshness and broker
benches do, with an optional side action (a probe) at a fixed interval."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def send_paced(rate: float, send: Callable[[int, int], None], total: int | None = None,
               stop: threading.Event | None = None, every_s: float | None = None,
               on_every: Callable[[], None] | None = None, tick_s: float = 0.005) -> tuple[int, float]:
    """Call ``send(start, end)`` each tick with the items ``[start, end)`` due by then, so that
    ``rate`` items go out per second, until ``total`` are sent or ``stop`` is set; call
    ``on_every()`` every ``every_s`` seconds (first at the start). Returns (items sent, the
    ``time.perf_counter()`` at the start)."""
    if total is None and stop is None:
        raise ValueError("send_paced needs a total or a stop event")
    sent, start = 0, time.perf_counter()
    next_side = start
    while (total is None or sent < total) and not (stop is not None and stop.is_set()):
        now = time.perf_counter()
        due = int((now - start) * rate)
        if total is not None:
            due = min(total, due)
        due = max(0, due - sent)
        send(sent, sent + due)
        sent += due
        if on_every is not None and now >= next_side:
            on_every()
            next_side += every_s
        time.sleep(max(0.0, tick_s - (time.perf_counter() - now)))
    return sent, start
