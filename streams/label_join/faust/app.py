"""The label-join worker's Faust app (`convcg worker`): validation and the label join. (The
streaming feature aggregates run as their own process, `streams.aggregates.worker`.)

One agent reads the three co-partitioned event topics in batches (`stream.take_events`) and
hands each batch to a `JoinProcessor` (`streams.label_join.processor`), which reaches the consumer
through `streams.label_join.faust.consumer_port.FaustConsumerPort`. Faust's acks are off for
the source topics: the processor commits their offsets itself, in offset order per partition
(`streams.label_join.ack_order` says why). The join state is a changelogged Faust table
(`streams.label_join.state`).

Delivery is at-least-once (output is flushed before offsets are committed). Every
effect is idempotent: impression states dedupe redelivered events, and label ids are
deterministic, so a label re-sent after a crash carries the same `label_id` and consumers keep
one (see `streams.label_join.labels.dedupe`). Faust's `exactly_once` and `on_window_close` are not used
(open reports of duplicates/hangs; windows closing only on a later event for the same key).
"""

from __future__ import annotations

import logging

from convcg.contract import Topics
from streams.kafka.output import OutputProducer
from streams.label_join.faust.consumer_port import FaustConsumerPort
from streams.label_join.faust.delivery import install_inline_delivery
from streams.label_join.faust.fetch_tuning import tune_fetches
from streams.label_join.processor import JoinProcessor
from streams.label_join.state import STATE_TABLE, JoinStateChangelog
from streams.settings import StreamSettings

log = logging.getLogger(__name__)


def build_app(settings: StreamSettings, partition_counts: dict[str, int] | None = None):
    """The Faust app of one worker (one consumer group = ``settings.app_id``)."""
    import faust

    topics = Topics(settings.kafka.topic_prefix)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.kafka.bootstrap}",
        store="memory://",
        datadir=str(settings.data_dir / f"{settings.app_id}-data"),
        autodiscover=False,
        topic_partitions=settings.partitions,
        topic_allow_declare=True,
        processing_guarantee="at_least_once",
        broker_commit_interval=settings.commit_interval_s,
        broker_commit_every=max(settings.batch_max, 10_000),
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=settings.session_timeout_s / 4,
        stream_buffer_maxsize=max(4 * settings.batch_max, 20_000),
        stream_wait_empty=False,
        web_enabled=False,
        Monitor="streams.label_join.faust.quiet_monitor:QuietMonitor",  # no per-record stats for web views we don't serve
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    # acks=False: Faust neither tracks nor commits these offsets; the processor commits them
    source = app.topic(*topics.events, key_serializer="raw", value_serializer="raw", acks=False)
    table = app.Table(STATE_TABLE, partitions=settings.partitions)  # JSON keys and values
    output = OutputProducer(settings.kafka.bootstrap, linger_ms=settings.output_linger_ms)
    processor = JoinProcessor(settings, FaustConsumerPort(app, settings.kafka.bootstrap, settings.app_id,
                                                                    partition_counts),
                              JoinStateChangelog(settings.kafka.bootstrap, table, output,
                                                 settings.restore_timeout_s), output)

    @app.agent(source, name="label-join")
    async def label_join(stream):
        try:
            async for batch in stream.take_events(settings.batch_max, within=settings.batch_within_s):
                await processor.process(batch)
        except Exception as exc:  # a bug, not bad input (that goes to the DLQ): stop the worker
            log.exception("label join crashed; stopping the worker so it restarts from committed offsets")
            await app.crash(exc)
            raise

    @app.on_partitions_assigned.connect
    async def on_partitions_assigned(app, assigned, **kwargs) -> None:  # noqa: ARG001 - signal API
        tune_fetches(app, settings.fetch.max_wait_ms, settings.fetch.min_bytes)
        install_inline_delivery(app.consumer)

    @app.on_partitions_revoked.connect
    async def on_partitions_revoked(app, revoked, **kwargs) -> None:  # noqa: ARG001 - signal API
        await processor.on_revoked(set(revoked))

    @app.timer(interval=max(settings.idle_source_after_s / 2, 0.5))
    async def advance_idle_partitions() -> None:
        if processor.joiners:
            await processor.tick()

    @app.timer(interval=10.0)
    async def report() -> None:
        if processor.joiners:
            log.info("batches=%d partitions=%s watermark=%s pending=%d buffered=%d",
                     processor.batches, sorted(processor.joiners),
                     {p: round(j.watermark, 1) for p, j in processor.joiners.items()},
                     sum(len(j.impressions) for j in processor.joiners.values()),
                     sum(j.buffered for j in processor.joiners.values()))

    return app


def run_worker(settings: StreamSettings, loglevel: str = "info") -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM."""
    from faust.worker import Worker

    from convcg.kafka.broker import create_topics, topic_partitions

    topics = Topics(settings.kafka.topic_prefix)
    create_topics(settings.kafka.bootstrap, topics.all(), settings.partitions)
    partition_counts = topic_partitions(settings.kafka.bootstrap, topics.events)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    app = build_app(settings, partition_counts)
    from convcg.process.runtime import tune_garbage_collector

    tune_garbage_collector(settings.gc_gen0_threshold)
    log.info("streams worker %s on %s (topics prefix %r, %d partitions)", settings.app_id,
             settings.kafka.bootstrap, settings.kafka.topic_prefix, settings.partitions)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
