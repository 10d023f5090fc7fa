"""convcg.metrics_scrape: the one /metrics reader, over text that prometheus_client itself
exposes (known observations in, known sums and buckets out)."""

from __future__ import annotations

import math

import pytest
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    start_http_server,
)

from convcg.kafka.broker import free_port
from convcg.metrics_scrape import (
    fetch_samples,
    histogram_buckets,
    metric_sum,
    parse_samples,
)


@pytest.fixture()
def registry():
    reg = CollectorRegistry()
    events = Counter("convcg_test_events_total", "events", ["type"], registry=reg)
    events.labels("impression").inc(3)
    events.labels("click").inc(2)
    plain = Counter("convcg_test_skipped_total", "skipped", registry=reg)
    plain.inc(7)
    fresh = Histogram("convcg_test_freshness_seconds", "freshness", ["entity"], buckets=(0.1, 0.5, 1.0),
                      registry=reg)
    for entity, values in (("user", (0.05, 0.2, 0.7)), ("item", (0.05, 3.0))):
        for v in values:
            fresh.labels(entity).observe(v)
    return reg


def test_sums_select_by_name_and_labels(registry):
    samples = parse_samples(generate_latest(registry).decode())
    assert metric_sum(samples, "convcg_test_events_total") == 5
    assert metric_sum(samples, "convcg_test_events_total", type="impression") == 3
    assert metric_sum(samples, "convcg_test_events_total", type="conversion") == 0
    assert metric_sum(samples, "convcg_test_skipped_total") == 7
    assert metric_sum(samples, "convcg_test_events") == 0  # a name is matched whole, not as a prefix
    assert metric_sum(samples, "convcg_test_freshness_seconds_count") == 5
    assert metric_sum(samples, "convcg_test_freshness_seconds_sum") == pytest.approx(4.0)


def test_histogram_buckets_are_summed_over_label_sets(registry):
    samples = parse_samples(generate_latest(registry).decode())
    assert histogram_buckets(samples, "convcg_test_freshness_seconds") == [
        (0.1, 2.0), (0.5, 3.0), (1.0, 4.0), (math.inf, 5.0)]
    assert histogram_buckets(samples, "convcg_test_freshness_seconds", entity="item") == [
        (0.1, 1.0), (0.5, 1.0), (1.0, 1.0), (math.inf, 2.0)]
    assert histogram_buckets(samples, "convcg_test_missing") == []


def test_fetch_from_a_served_port_and_nothing_there(registry):
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        assert metric_sum(fetch_samples(port), "convcg_test_events_total", type="click") == 2
    finally:
        server.shutdown()
        thread.join(5)
    dead = free_port()
    assert fetch_samples(dead, missing_ok=True) == []
    with pytest.raises(OSError):
        fetch_samples(dead)
