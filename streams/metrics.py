"""Prometheus metrics of the streams component: the label join worker and the aggregates worker."""

from __future__ import annotations

import math

from prometheus_client import Counter, Gauge, Histogram

from convcg.contract import MetricNames

EVENTS_IN = Counter(MetricNames.EVENTS_JOINED, "Valid events consumed, by type", ["type"])
LABELS_OUT = Counter(MetricNames.LABELS_EMITTED, "Labels emitted, by kind", ["kind"])
DEAD_LETTERS = Counter("convcg_stream_dead_letters_total", "Records sent to the dead-letter topic, by reason", ["reason"])
DROPPED = Counter("convcg_stream_dropped_total", "Valid events dropped by the join with a reason (late / unattributable)", ["reason"])
REDELIVERED = Counter("convcg_stream_redelivered_records_total", "Records Faust delivered a second time (skipped: the first copy carries the effect)", ["topic"])
HOLES_READ = Counter("convcg_stream_hole_offsets_read_total", "Offsets the consumer skipped, read back from the broker by the worker", ["topic"])
TRUSTED_CLOSES = Counter("convcg_stream_trusted_closes_total", "Producer watermarks honoured as a trusted close "
                         "(header convcg-trusted-close, `convcg replay --close`) beyond the clock bound")
FEATURE_UPDATES = Counter("convcg_stream_feature_updates_total", "Feature updates emitted, by entity", ["entity"])
WATERMARK = Gauge("convcg_stream_watermark_seconds", "Event-time watermark per partition", ["partition"])
WATERMARK_LAG = Gauge("convcg_stream_watermark_lag_seconds", "Newest event time seen minus watermark, per partition", ["partition"])
CONSUMER_LAG = Gauge("convcg_stream_consumer_lag", "Highwater minus next offset, per source topic-partition", ["topic", "partition"])
OLDEST_UNCOMMITTED = Gauge("convcg_stream_oldest_uncommitted_age_seconds", "Seconds since the oldest record not "
                           "yet done (its offset not committable) was delivered, per source topic-partition; 0 = none held",
                           ["topic", "partition"])
BUFFERED = Gauge("convcg_stream_buffered_events", "Events held in the reorder buffer, per partition", ["partition"])
PENDING = Gauge("convcg_stream_pending_impressions", "Impressions inside their attribution window, per partition", ["partition"])

# --- the aggregates worker (convcg aggregates) ------------------------------------------------
AGG_EVENTS_IN = Counter(MetricNames.EVENTS_AGGREGATED, "Valid events counted into the feature aggregates, by type",
                        ["type"])
AGG_SKIPPED = Counter("convcg_aggregates_skipped_total",
                      "Invalid events skipped by the aggregates (the label join worker dead-letters them), by reason",
                      ["reason"])
AGG_UPDATE_DELAY = Histogram(
    "convcg_aggregates_update_delay_seconds",
    "From the newest event of an update entering Kafka to the update being sent (the aggregates' leg of freshness)",
    ["entity"], buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))
AGG_RESTORE_SECONDS = Gauge("convcg_aggregates_restore_seconds",
                            "How long restoring the newly assigned partitions' state from the changelogs took (last assignment)")
AGG_CATCHUP_SECONDS = Gauge("convcg_aggregates_catchup_seconds",
                            "From an assignment to every assigned partition reaching the end offsets seen then")
AGG_RESTORED_ENTITIES = Gauge("convcg_aggregates_restored_entities",
                              "Entities restored from the changelogs at the last assignment")
AGG_STAGE_PARTITIONS = Gauge("convcg_aggregates_stage_partitions", "Stage partitions assigned to this worker")
AGG_STAGE_RECORDS = Counter("convcg_aggregates_stage_records_total", "Records read by each aggregates stage", ["stage"])
AGG_STATE_RECORDS = Counter("convcg_aggregates_state_records_total", "Records written to the aggregates changelogs",
                            ["stage"])
AGG_REFUSED = Gauge("convcg_aggregates_stage_events_refused",
                    "Events a stage partition held by this process refused since it was restored, by stage and "
                    "reason (too_late: behind the dedupe horizon; duplicates: an id seen at another position)",
                    ["stage", "reason"])
AGG_OLDEST_UNCOMMITTED = Gauge("convcg_aggregates_oldest_uncommitted_age_seconds", "Seconds since the oldest "
                               "record polled but not yet committed was polled, per source topic-partition; 0 = none",
                               ["topic", "partition"])
AGG_LAG = Gauge("convcg_aggregates_consumer_lag", "Highwater minus next offset, per source topic-partition",
                ["topic", "partition"])


def export_join_partition(partition: int, watermark: float, newest: float, buffered: int, pending: int) -> None:
    """The label join's gauges of one partition (infinite values, before any event, as 0)."""
    p = str(partition)
    WATERMARK.labels(p).set(watermark if math.isfinite(watermark) else 0)
    lag = newest - watermark
    WATERMARK_LAG.labels(p).set(lag if math.isfinite(lag) else 0)
    BUFFERED.labels(p).set(buffered)
    PENDING.labels(p).set(pending)


def export_oldest_uncommitted(gauge: Gauge, since: dict, now: float) -> None:
    """``gauge`` per (topic, partition): ``now`` minus when its oldest uncommitted record came
    (``since``: (topic, partition) or a TopicPartition -> monotonic time, None = nothing held)."""
    for tp, t in since.items():
        topic, partition = (tp.topic, tp.partition) if hasattr(tp, "topic") else tp
        gauge.labels(topic, str(partition)).set(0.0 if t is None else max(0.0, now - t))


def forget_partitions(gauge: Gauge, tps) -> None:
    """Drop the series of partitions this process no longer holds (revoked)."""
    for tp in tps:
        try:
            gauge.remove(tp.topic, str(tp.partition))
        except KeyError:
            pass
