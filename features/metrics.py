"""Prometheus metrics of the features component (sink and lookup service)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from convcg.contract import MetricNames

#: fine below 1 s (the freshness target), coarse above: for operators' alerts and dashboards;
#: reports measure exact percentiles from probes instead (loop.freshness)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0,
                     1.25, 1.5, 2.0, 2.5, 5.0, 10.0, 30.0, 60.0)
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1.0)

FRESHNESS = Histogram(
    MetricNames.FEATURE_FRESHNESS,
    "Time from an event entering Kafka (FeatureUpdate.ingest_ms) to its value being visible in "
    "the online store", ["entity"], buckets=FRESHNESS_BUCKETS)
SINK_UPDATES = Counter("convcg_features_sink_updates_total",
                       "Feature updates consumed and written online+offline", ["entity"])
SINK_ONLINE_ROWS = Counter("convcg_features_sink_online_rows_total",
                           "Rows written to the online store (after coalescing per entity)", ["entity"])
SINK_LABELS = Counter("convcg_features_sink_labels_total",
                      "Labels consumed, by result (written | duplicate | too_old: older than the dedupe horizon "
                      "of their partition, not written)", ["result"])
SINK_DEAD_LETTERS = Counter("convcg_features_sink_dead_letters_total",
                            "Malformed messages sent to the dead-letter topic", ["topic"])
SINK_WRITE_FAILURES = Counter("convcg_features_sink_write_failures_total",
                              "Failed write attempts (retried with backoff)", ["stage"])
SINK_BATCH_SECONDS = Histogram("convcg_features_sink_batch_seconds",
                               "Wall time to write one batch (online + offline + labels)",
                               buckets=LATENCY_BUCKETS + (2.5, 5.0, 10.0))
REQUESTS = Counter("convcg_features_requests_total", "HTTP lookups by endpoint and status",
                   ["endpoint", "status"])
REQUEST_SECONDS = Histogram("convcg_features_request_seconds", "HTTP lookup latency in the handler",
                            ["endpoint"], buckets=LATENCY_BUCKETS)
ENTITIES_LOOKED_UP = Counter("convcg_features_entities_looked_up_total",
                             "Entities read from the online store by the lookup service", ["view"])
