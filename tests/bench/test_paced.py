"""bench.rigs.paced: the paced producer the freshness and broker benches share sends every
item exactly once, in order, and calls its side action (the probe) along the way."""

from __future__ import annotations

import threading

import pytest

from bench.rigs.paced import send_paced


def test_sends_each_item_once_in_order_and_probes():
    ranges, probes = [], []
    sent, start = send_paced(5000, lambda a, b: ranges.append((a, b)), total=200, every_s=0.005,
                             on_every=lambda: probes.append(1))
    assert sent == 200 and start > 0
    assert ranges[0][0] == 0 and ranges[-1][1] == 200
    assert all(a == prev_b for (_, prev_b), (a, _) in zip(ranges, ranges[1:]))  # contiguous, no overlap
    assert probes  # the first one is due at the start


def test_runs_until_stopped_without_a_total():
    stop = threading.Event()
    seen = []

    def send(a: int, b: int) -> None:
        seen.extend(range(a, b))
        if len(seen) >= 50:
            stop.set()

    sent, _ = send_paced(10_000, send, stop=stop)
    assert sent == len(seen) >= 50 and seen == list(range(sent))
    with pytest.raises(ValueError):
        send_paced(10, send)
