"""convcg.stats: the one latency summary and the one histogram quantile (known in, known out)."""

from __future__ import annotations

import math

import pytest

from convcg.stats import (
    bucket_counts,
    histogram_quantile,
    histogram_summary,
    latency_summary_ms,
)


def test_latency_summary_of_known_samples():
    # 1 ms .. 100 ms: numpy's linear percentile of 1..100 is 50.5 and 99.01
    s = latency_summary_ms([i / 1000 for i in range(1, 101)], (50, 90, 99))
    assert s["n"] == 100
    assert s["p50_ms"] == pytest.approx(50.5)
    assert s["p90_ms"] == pytest.approx(90.1)
    assert s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == pytest.approx(100.0) and s["mean_ms"] == pytest.approx(50.5)
    assert set(latency_summary_ms([0.001])) == {"n", "p50_ms", "p99_ms", "max_ms", "mean_ms"}


def test_latency_summary_of_nothing_is_nan_not_zero():
    s = latency_summary_ms([])
    assert s["n"] == 0 and all(math.isnan(s[k]) for k in ("p50_ms", "p99_ms", "max_ms", "mean_ms"))


BUCKETS = [(0.1, 50.0), (0.5, 90.0), (1.0, 99.0), (math.inf, 100.0)]  # cumulative


def test_histogram_quantile_is_the_upper_bound_of_the_bucket_it_falls_in():
    assert histogram_quantile(BUCKETS, 0.5) == 0.1
    assert histogram_quantile(BUCKETS, 0.51) == 0.5
    assert histogram_quantile(BUCKETS, 0.9) == 0.5
    assert histogram_quantile(BUCKETS, 0.99) == 1.0
    assert histogram_quantile(BUCKETS, 0.995) == math.inf
    assert math.isnan(histogram_quantile([], 0.5))
    assert math.isnan(histogram_quantile([(0.1, 0.0), (math.inf, 0.0)], 0.5))
    with pytest.raises(ValueError):
        histogram_quantile(BUCKETS, 1.5)


def test_histogram_summary_and_bucket_counts():
    assert histogram_summary(BUCKETS) == {"count": 100.0, "p50": 0.1, "p90": 0.5, "p99": 1.0}
    assert bucket_counts(BUCKETS) == [(0.1, 50.0), (0.5, 40.0), (1.0, 9.0), (math.inf, 1.0)]


def test_the_freshness_verdict_fails_when_nothing_was_seen_or_a_probe_never_arrived():
    from bench.rigs.probes import freshness_verdict

    assert freshness_verdict([0.1, 0.2, 0.3], lost=0) == (pytest.approx(0.298), True)
    assert freshness_verdict([0.1, 0.2, 0.3], lost=1)[1] is False  # a probe never visible
    assert freshness_verdict([], lost=0)[1] is False  # no probe at all: nothing was measured
    assert freshness_verdict([0.5, 2.0], lost=0)[1] is False
