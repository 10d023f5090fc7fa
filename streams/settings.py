"""Typed settings of the streams component (env prefix ``CONVCG_STREAMS_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.kafka.settings import ConsumerTuning, KafkaSettings
from convcg.validation import DEFAULT_MAX_CLOCK_SKEW_S, TRUSTED_CLOSE_HEADER
from streams.label_join.rules import LabelRules


class StreamSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_STREAMS_", env_nested_delimiter="__")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    partitions: int = Field(3, ge=1, description="partitions of every topic (all co-partitioned by user)")
    app_id: str = Field("convcg-streams", description="Faust app id = consumer group")
    batch_max: int = Field(5000, ge=1, description="events per processing batch (stream.take)")
    batch_within_s: float = Field(0.2, gt=0, description="max wait to fill a batch")
    commit_interval_s: float = Field(1.0, gt=0)
    idle_source_after_s: float = Field(2.0, ge=0, description="a caught-up source stops holding the watermark after this long without records")
    fetch: ConsumerTuning = Field(default_factory=ConsumerTuning, description="the label-join worker's fetches "
                                  "(Faust fixes them at 1500 ms with 1 byte; streams.label_join.faust.fetch_tuning sets these)")
    output_linger_ms: int = Field(5, ge=0, description="linger of the worker's and the aggregates' librdkafka "
                                  "producer (labels, states, repartition records, feature updates). 5 vs 20 made no difference "
                                  "beyond noise to the broker's CPU in bench.system.pipeline_freshness at 3,000 events/s: the worker "
                                  "flushes every batch and the aggregates send in bursts, one per poll")
    session_timeout_s: float = Field(10.0, gt=0, description="a dead worker's partitions move after this")
    restore_timeout_s: float = Field(120.0, gt=0, description="longest a partition's state read from its changelog "
                                     "may take; a restore that fails stops the worker with an error (its supervisor "
                                     "restarts it) instead of leaving the partition without state")
    max_future_s: float = Field(DEFAULT_MAX_CLOCK_SKEW_S, gt=0, description="the clock skew allowed between "
                                "producers and the workers: an event or a producer watermark stamped further ahead of "
                                "now is dead-lettered (reason timestamp_in_future / watermark_in_future), and a join "
                                "source's newest time is clamped to now + this (one setting for both)")
    trusted_close: bool = Field(True, description=f"honour producer watermarks carrying the header "
                                f"{TRUSTED_CLOSE_HEADER}: 1 (set only by `convcg replay --close`) beyond the clock "
                                "bound. On for the embedded default (`convcg up`, replays); set false where producers "
                                "you do not run write the event topics: then such a watermark is dead-lettered like "
                                "any other one ahead of the clock")
    data_dir: Path = Field(Path("var/streams"), description="Faust's local data folder (one per app id)")
    metrics_port: int = Field(0, ge=0, description="Prometheus /metrics port; 0 = off")
    metrics_host: str = Field("127.0.0.1", description="address /metrics binds (loopback unless set)")
    rules: LabelRules = Field(default_factory=LabelRules)
    gc_gen0_threshold: int = Field(50_000, ge=700, description="net allocations between collections of the youngest "
                                   "generation in the worker process (CPython's default 700 promotes a batch's short-lived "
                                   "objects; see convcg.process.runtime.tune_garbage_collector)")

    # --- the aggregates worker (convcg aggregates) -----------------------------------------
    feature_flush_interval_s: float = Field(0.1, ge=0, description="send coalesced feature updates at most this "
                                            "often: longer coalesces more updates per entity but adds up to that much to freshness "
                                            "(bench/perf/aggregates.py prints updates/s by interval)")
    aggregates_poll_max_records: int = Field(5000, ge=1, description="records per poll")
    aggregates_poll_timeout_ms: int = Field(50, ge=1, description="longest a poll waits when nothing is buffered")
    aggregates_fetch: ConsumerTuning = Field(default_factory=ConsumerTuning, description="the aggregates workers' fetches")
    aggregates_group: str = Field("", description="consumer group of the aggregates workers; empty: "
                                  "<topic_prefix>convcg-aggregates")
    aggregates_state_flush_s: float = Field(1.0, gt=0, description="write changed state to the changelogs and commit "
                                            "offsets this often: a restart re-reads at most about this much of the log")
    aggregates_gc_thresholds: tuple[int, int, int] = Field((50_000, 20, 100), description="gc.set_threshold of "
                                                           "`convcg aggregates` (Python's default is 700, 10, 10)")
    aggregates_report_every_s: float = Field(5.0, gt=0, description="lag metrics / rebuild progress this often")
    aggregates_evict_every_s: float = Field(60.0, gt=0, description="drop entities outside every window this often")
