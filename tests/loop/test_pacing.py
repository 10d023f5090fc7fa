"""The live replay's steady pacing (pure, on a simulated clock) and the measured freshness
arithmetic the report prints (known delays in, exact percentiles out)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from convcg.contract import Impression
from loop.freshness import (
    SendLog,
    ServedVersion,
    exact_percentiles,
    label_delays,
    model_delays,
)
from loop.pacing import SteadyPacer, events_due, window_rates
from loop.probes import ProbePicker
from loop.report import freshness_section


class SimClock:
    """Simulated wall clock: sleeping advances it; each send costs a random time."""

    def __init__(self, seed: int = 0, stall_at: float = 7.7, stall_s: float = 0.5) -> None:
        self.t = 1000.0
        self.rng = random.Random(seed)
        self.stall_at, self.stall_s = 1000.0 + stall_at, stall_s

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s * self.rng.uniform(1.0, 1.5)  # the OS wakes late, never early

    def cost(self, batch) -> None:
        self.t += 0.0005 + 0.00002 * len(batch) * self.rng.uniform(0.5, 2.0)
        if self.t >= self.stall_at:  # one long stall (a GC pause, a busy core) late in second 7
            self.t += self.stall_s
            self.stall_at = float("inf")


def _events(n: int):
    return [Impression(f"e{i}", f"imp{i}", 1_000_000 + i * 37.5, f"u{i % 50}", f"i{i % 7}", "a", "home", 0)
            for i in range(n)]


def test_events_due_starts_with_the_first_event_and_never_passes_the_end():
    assert events_due(-1, 100, 10) == 0
    assert events_due(0.0, 100, 10) == 1
    assert events_due(0.055, 100, 10) == 6
    assert events_due(99.0, 100, 10) == 10


@pytest.mark.parametrize("rate", [500, 2000, 5000])
def test_steady_pacer_keeps_its_rate_within_10_percent_in_every_second(rate):
    clock = SimClock(seed=rate)
    got = []

    def send(batch):
        clock.cost(batch)
        got.extend(batch)

    events = _events(rate * 20)
    report = SteadyPacer(events, rate, send, clock=clock.now, sleep=clock.sleep).run()
    assert got == events  # everything, once, in order
    assert abs(report.achieved_rate / rate - 1) <= 0.10
    assert len(report.window_rates) >= 19
    # the stall moves events from second 7 into second 8 (caught up there); every other second holds
    others = [w for k, w in enumerate(report.window_rates) if k not in (7, 8)]
    assert all(abs(w / rate - 1) <= 0.10 for w in others), report.window_rates
    assert report.window_rates[7] < 0.9 * rate < 1.1 * rate < report.window_rates[8]
    assert report.event_seconds_per_wall_second == pytest.approx(37.5 * rate, rel=0.10)
    d = report.as_dict()
    assert d["target_events_per_s"] == rate and d["events"] == len(events)


def test_pacer_stops_when_asked_and_reports_what_it_sent():
    clock = SimClock()
    sent = []
    pacer = SteadyPacer(_events(10_000), 1000, sent.extend, clock=clock.now, sleep=clock.sleep,
                        should_stop=lambda: len(sent) >= 3000)
    report = pacer.run()
    assert 3000 <= report.sent == len(sent) < 3100


def test_window_rates_count_events_per_full_second():
    assert window_rates([0.0, 0.5, 1.2, 2.9, 3.0], [10, 10, 30, 5, 1]) == [20.0, 30.0, 5.0]


def test_exact_percentiles_of_known_delays():
    delays = [i / 1000 for i in range(1, 1001)]  # 1 ms .. 1000 ms
    random.Random(1).shuffle(delays)
    p = exact_percentiles(delays)
    assert p["count"] == 1000
    assert p["p50"] == pytest.approx(0.5005, abs=1e-4)
    assert p["p90"] == pytest.approx(0.9001, abs=1e-4)
    assert p["p99"] == pytest.approx(0.99001, abs=1e-4)
    assert p["max"] == 1.0
    assert exact_percentiles([])["p99"] is None


def test_label_freshness_is_measured_from_the_due_time():
    sends = SendLog()
    for k in range(100):  # event time 0, 100, ..., 9900 sent at wall 50.0, 50.1, ...
        sends.record(k * 100.0, 50.0 + k * 0.1)
    sends.record(500.0, 99.0)  # an older event time sent later changes nothing
    lateness = 60.0
    # label_ts 140 is due once an event at >= 200 is sent (wall 50.2); on the topic 0.25 s later
    labels = [(140.0, 50.45), (300.0, 50.9), (9_000.0, 60.1), (20_000.0, 200.0), (-500.0, 10.0)]
    delays, never = label_delays(labels, sends, lateness)
    assert delays == pytest.approx([0.25, 0.5, 1.0])
    assert never == 1  # due past the last event sent; the one due before recording is skipped


def test_model_freshness_uses_the_first_served_version_created_after_and_trained_on_the_label():
    versions = [ServedVersion("v1", created_wall=100.0, label_ts_max=1_000.0, serving_since=110.0),
                ServedVersion("v2", created_wall=130.0, label_ts_max=2_000.0, serving_since=135.0),
                ServedVersion("v3", created_wall=160.0, label_ts_max=3_000.0, serving_since=170.0)]
    labels = [(900.0, 95.0),    # v1: created after it arrived and trained on it -> 110 - 95
              (1_500.0, 96.0),  # v1's data ends before it -> v2 -> 135 - 96
              (900.0, 120.0),   # arrived after v1 was made -> v2 -> 15
              (2_500.0, 150.0),  # v3 -> 20
              (9_999.0, 150.0),  # no version trained on it yet
              (1.0, 10.0)]       # before the live phase
    delays, pending = model_delays(labels, versions, since_wall=50.0)
    assert delays == pytest.approx([15.0, 39.0, 15.0, 20.0])
    assert pending == 1


def test_report_section_prints_the_measured_percentiles():
    rng = np.random.default_rng(0)
    delays = list(rng.exponential(0.2, 5000))
    summary = {"live_pace": {"events": 100_000, "target_events_per_s": 2000, "achieved_events_per_s": 1999.0,
                             "slowest_1s_window_events_per_s": 1990, "fastest_1s_window_events_per_s": 2010,
                             "event_seconds_per_wall_second": 7200.0, "event_hours_per_wall_second": 2.0,
                             "producer_linger_ms": 20},
               "feature_freshness_seconds": {**exact_percentiles(delays), "never_visible": 0, "lookup_errors": 0},
               "label_freshness_seconds": {**exact_percentiles([1.5] * 10), "not_due_by_the_end": 3},
               "model_freshness_seconds": {**exact_percentiles([30.0, 50.0]), "not_yet_in_a_serving_model": 7}}
    text = "\n".join(freshness_section(summary))
    p99 = np.percentile(delays, 99)
    assert f"{p99 * 1000:.0f} ms" in text
    assert f"{np.percentile(delays, 50) * 1000:.0f} ms" in text
    assert "| 10 | 1.50 s | 1.50 s | 1.50 s | 1.50 s | not due by the end 3 |" in text
    assert "49.80 s" in text and "not yet in a serving model 7" in text  # p99 of 30 s and 50 s
    assert "2,000 events/s" in text and "7,200 s (2.00 h) of event time" in text
    assert "the live producer lingers 20 ms" in text


def test_probe_picker_takes_only_events_in_a_new_second_for_their_user():
    picker = ProbePicker(interval_s=1.0)
    picker.observe("u1", 100.2)
    assert not picker.offer("u1", 100.9, wall=0.0)  # same whole second as an earlier event
    assert picker.offer("u1", 101.0, wall=0.0)
    assert not picker.offer("u2", 5.0, wall=0.5)  # within the interval
    assert picker.offer("u2", 6.0, wall=1.0)


def test_model_freshness_parts_add_up_to_each_labels_delay():
    from loop.freshness import MODEL_FRESHNESS_PARTS, model_delay_parts

    versions = [ServedVersion("v1", created_wall=100.0, label_ts_max=1_000.0, serving_since=110.0,
                              step_started_wall=90.0, index_written_wall=104.0),
                ServedVersion("v2", created_wall=130.0, label_ts_max=2_000.0, serving_since=135.0,
                              step_started_wall=121.0, index_written_wall=133.0),
                ServedVersion("v3", created_wall=160.0, label_ts_max=3_000.0, serving_since=170.0)]
    labels = [(900.0, 85.0),    # waits 5 s for v1's step, which trains 10 s, indexes 4, swaps 6
              (900.0, 95.0),    # reached the trainer while v1's step gathered its backlog: no wait
              (1_500.0, 101.0),  # v2: waits 20, trains 9, indexes 3, swaps 2
              (2_500.0, 150.0)]  # v3 has no recorded step: left out of the parts
    parts = model_delay_parts(labels, versions, since_wall=50.0)
    assert list(parts) == list(MODEL_FRESHNESS_PARTS)
    assert parts["wait_for_step"] == pytest.approx([5.0, 0.0, 20.0])
    assert parts["train_and_gate"] == pytest.approx([10.0, 5.0, 9.0])
    assert parts["embed_and_index"] == pytest.approx([4.0, 4.0, 3.0])
    assert parts["load_and_swap"] == pytest.approx([6.0, 6.0, 2.0])
    delays, _ = model_delays(labels[:3], versions, since_wall=50.0)
    assert [sum(p[i] for p in parts.values()) for i in range(3)] == pytest.approx(delays)


def test_report_shows_where_model_freshness_goes():
    parts = {"wait_for_step": {**exact_percentiles([6.0, 10.0]), "mean": 8.0},
             "train_and_gate": {**exact_percentiles([10.0]), "mean": 10.0},
             "embed_and_index": {**exact_percentiles([1.5]), "mean": 1.5},
             "load_and_swap": {**exact_percentiles([0.5]), "mean": 0.5}}
    summary = {"model_freshness_seconds": {**exact_percentiles([20.0]), "not_yet_in_a_serving_model": 0,
                                           "parts": parts}}
    text = "\n".join(freshness_section(summary))
    assert "| the step: store, train, gate, publish | 10.00 s | 10.00 s | 10.00 s | 50% |" in text
    assert "| waiting for the trainer's next step to take it | 8.00 s | 9.96 s | 8.00 s | 40% |" in text
    assert "| the retrieval service: load the index and swap it in | 500 ms |" in text
    assert "Where model freshness goes" not in "\n".join(freshness_section({"model_freshness_seconds": {}}))
