"""The Kafka -> Feast sink: feature updates to the online + offline stores, labels to the
offline label table.

Why a plain aiokafka consumer loop and not a Faust agent: the sink's one hard rule is "never
commit an offset past data that is not written". That needs (a) explicit batches, so a whole
poll is written with one online push per entity and one part file, (b) blocking the stream while
a store is down (retrying the *same* batch with backoff) and (c) committing only after the
write. Faust acks each event when the agent moves on and commits in the background on a timer,
and an agent that blocks for minutes stalls its whole worker and its rebalance handling; with a
consumer loop the three rules are a dozen visible lines. (In streams/ only the label join
runs on Faust; the feature updates come from `convcg aggregates`, a plain consumer loop.)

Delivery: at-least-once. Online writes are idempotent (same value, newest event time wins);
a redelivered label is dropped by ``label_id``, remembered for ``dedupe_horizon_s`` of event
time per partition (``convcg.dedupe``; the stored labels within that horizon of the newest are
loaded at start, older ones are not, so memory is bounded by the horizon, not the history);
a redelivered feature row may be appended offline twice with the same values, which the
point-in-time join resolves to the same value.

Poison: a record the stores cannot hold is dead-lettered with its reason, never retried.
``decode_records`` checks ranges at the door (event times up to ``MAX_STORED_TS``, integers
within int64); a write that still fails on its data is bisected (``features.sink.write_errors``):
the rest is written, each record that fails alone is dead-lettered, and the offsets move on.
Only a store that is unavailable (``is_transient``) makes the sink retry the same batch.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import orjson
import pyarrow as pa

from convcg.contract import ENTITIES, FeatureUpdate, Label, Topics
from convcg.dedupe import SeenWithinHorizon
from convcg.validation import InvalidLabel, dead_letter, decode_dead_letter, parse_label
from features import metrics
from features.sink.compaction import compact_parts
from features.offline import read_recent_parts, write_part
from features.online.write import row_writer
from features.repo.definitions import stream_view_name
from features.settings import FeaturesSettings
from features.sink.pending import PendingOffline
from features.sink.updates import (
    LABEL_SCHEMA,
    InvalidMessage,
    group_by_entity,
    labels_table,
    latest_per_entity,
    new_labels,
    parse_feature_update,
    stream_schema,
)
from features.sink.write_errors import is_transient, split_on_data_errors

log = logging.getLogger(__name__)

DEAD_LETTER_COMPONENT = "features-sink"


class SinkStopped(Exception):
    """Stop was requested while a batch was still unwritten (its offsets stay uncommitted)."""


@dataclass
class Batch:
    """Valid messages and dead letters of one poll, plus the write stages already done, so a
    retry after a partial failure repeats none of them."""

    updates: list[FeatureUpdate] = field(default_factory=list)
    labels: list[tuple[int, Label]] = field(default_factory=list)  # (labels-topic partition, label)
    dead_letters: list[bytes] = field(default_factory=list)
    sources: dict[int, Any] = field(default_factory=dict)  # id(update or label) -> its consumer record
    done: set[str] = field(default_factory=set)
    created: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


def dead_letter_for(record, reason: str, detail: str) -> bytes:
    value = record.value if isinstance(record.value, (bytes, type(None))) else str(record.value).encode()
    return dead_letter(DEAD_LETTER_COMPONENT, record.topic, record.partition, record.offset, value, reason, detail,
                       time.time())


def decode_records(records: list, topics: Topics) -> Batch:
    """Pure: turn consumer records into a Batch of valid updates/labels and dead letters."""
    batch = Batch()
    for rec in records:
        try:
            obj = orjson.loads(rec.value)
            if rec.topic == topics.feature_updates:
                parsed = parse_feature_update(obj)
                batch.updates.append(parsed)
            else:
                parsed = parse_label(obj)
                batch.labels.append((rec.partition, parsed))
            batch.sources[id(parsed)] = rec
        except orjson.JSONDecodeError as exc:
            batch.dead_letters.append(dead_letter_for(rec, "malformed_json", f"not valid JSON: {exc}"))
        except InvalidLabel as exc:
            batch.dead_letters.append(dead_letter_for(rec, "invalid_label", str(exc)))
        except (InvalidMessage, TypeError) as exc:
            batch.dead_letters.append(dead_letter_for(rec, "invalid_feature_update", str(exc)))
    return batch


class FeastWriter:
    """Writes batches to Feast's online store, the offline part files and the label table."""

    def __init__(self, settings: FeaturesSettings, store=None):
        from features.repo.store import apply_repo

        self.settings = settings
        self.store = store if store is not None else apply_repo(settings)
        self.online = row_writer(self.store, fast=settings.online_writer == "fast")
        self._freshness = {e: metrics.FRESHNESS.labels(e) for e in ENTITIES}
        self.seen_label_ids = SeenWithinHorizon(settings.dedupe_horizon_s)
        stored = read_recent_parts(settings.labels_dir, LABEL_SCHEMA, "label_ts", settings.dedupe_horizon_s,
                                   columns=["label_id", "label_ts"])
        for label_id, label_ts in zip(stored.column("label_id").to_pylist(), stored.column("label_ts").to_pylist()):
            self.seen_label_ids.add(None, label_id, label_ts)
        log.info("sink writer ready: %d label ids of the last %.0f s of event time stored in %s",
                 len(self.seen_label_ids), settings.dedupe_horizon_s, settings.labels_dir)

    def _write_online_rows(self, updates: list[FeatureUpdate], created: datetime) -> None:
        for entity, ups in group_by_entity(updates).items():
            self.online.write(entity, ups, created)
            metrics.SINK_ONLINE_ROWS.labels(entity).inc(len(ups))

    def write_online(self, batch: Batch) -> None:
        """The newest update of each entity online; one the store refuses on its data is
        dead-lettered (and dropped from the batch: not written offline either)."""
        _, failed = split_on_data_errors(latest_per_entity(batch.updates),
                                         lambda ups: self._write_online_rows(ups, batch.created))
        if failed:
            refused = {id(u) for u, _ in failed}
            batch.updates = [u for u in batch.updates if id(u) not in refused]
            batch.dead_letters += unwritable(failed, batch.sources, "unwritable_feature_update")
        now_ms = time.time() * 1000.0
        freshness = self._freshness
        for u in batch.updates:
            if u.ingest_ms > 0:  # 0: the producer did not know when the event entered Kafka
                freshness[u.entity].observe(max(0.0, now_ms - u.ingest_ms) / 1000.0)

    def write_offline(self, pending: PendingOffline) -> None:
        for entity, table in pending.updates_tables(pending.created).items():
            write_part(self.settings.offline_root / stream_view_name(entity), table)
            metrics.SINK_UPDATES.labels(entity).inc(table.num_rows)

    def compact(self) -> int:
        """Merge the small part files of every offline folder the sink appends to."""
        s = self.settings
        folders = [(s.offline_root / stream_view_name(e), stream_schema(e)) for e in ENTITIES]
        return sum(compact_parts(d, schema, s.compact_max_parts, s.compact_part_bytes)
                   for d, schema in folders + [(s.labels_dir, LABEL_SCHEMA)])

    def write_labels(self, pending: PendingOffline) -> None:
        fresh, too_old = new_labels(pending.labels, self.seen_label_ids)
        tables, failed = split_on_data_errors(fresh, lambda pairs: labels_table([lab for _, lab in pairs],
                                                                                pending.created))
        if tables:
            write_part(self.settings.labels_dir, pa.concat_tables(tables))
        if failed:
            refused = {id(lab) for (_, lab), _ in failed}
            fresh = [(p, lab) for p, lab in fresh if id(lab) not in refused]
            pending.dead_letters += unwritable([(lab, exc) for (_, lab), exc in failed], pending.sources,
                                               "unwritable_label")
        for partition, lab in fresh:
            self.seen_label_ids.add(partition, lab.label_id, lab.label_ts)
        if too_old:
            log.warning("%d labels older than the dedupe horizon of their partition: not written", too_old)
        metrics.SINK_LABELS.labels("written").inc(len(fresh))
        metrics.SINK_LABELS.labels("too_old").inc(too_old)
        metrics.SINK_LABELS.labels("duplicate").inc(len(pending.labels) - len(fresh) - too_old - len(failed))


def unwritable(failed: list[tuple[Any, BaseException]], sources: dict[int, Any], reason: str) -> list[bytes]:
    """Dead letters of the records a store refused on their data, with the store's reason."""
    return [dead_letter_for(sources[id(item)], reason, f"{type(exc).__name__}: {str(exc)[:300]}")
            for item, exc in failed]


class FeatureSink:
    def __init__(self, settings: FeaturesSettings, bootstrap: str, writer: FeastWriter | None = None):
        self.settings = settings
        self.bootstrap = bootstrap
        self.topics = Topics(settings.kafka.topic_prefix)
        self.writer = writer or FeastWriter(settings)
        self.stop_requested = asyncio.Event()
        self.batches_written = 0

    async def _write_with_retry(self, stage: str, fn: Callable[[Any], None], work: Batch | PendingOffline) -> None:
        """Run one write stage until it succeeds while its store is unavailable; a stop request
        while failing raises ``SinkStopped`` (so the caller never commits past unwritten data).
        The stages bisect a batch that fails on data themselves, so any other error is a fault
        of the sink: raised (the component exits with it), never retried forever."""
        delay = self.settings.retry_initial_seconds
        while stage not in work.done:
            try:
                await asyncio.to_thread(fn, work)
                work.done.add(stage)
            except Exception as exc:  # store down, disk full...: keep the batch, retry
                metrics.SINK_WRITE_FAILURES.labels(stage).inc()
                if not is_transient(exc):
                    raise
                log.warning("%s write failed (%s: %s); retrying the same batch in %.1fs, "
                            "offsets not committed", stage, type(exc).__name__, exc, delay)
                try:
                    await asyncio.wait_for(self.stop_requested.wait(), delay)
                except asyncio.TimeoutError:
                    pass
                if self.stop_requested.is_set():
                    raise SinkStopped(f"stopped while the {stage} write was failing") from exc
                delay = min(delay * 2, self.settings.retry_max_seconds)

    def _flush_due(self, pending: PendingOffline) -> bool:
        return bool(pending) and (pending.rows >= self.settings.offline_flush_rows
                                  or time.monotonic() - pending.since >= self.settings.offline_flush_seconds)

    async def _flush(self, consumer, producer, pending: PendingOffline) -> None:
        """Append the pending rows offline and the new labels, then commit the offsets they
        cover (only those: polls made meanwhile belong to the next flush)."""
        from aiokafka.errors import CommitFailedError, IllegalStateError
        from aiokafka.structs import TopicPartition

        pending.created = datetime.now(timezone.utc)
        await self._write_with_retry("offline", self.writer.write_offline, pending)
        await self._write_with_retry("labels", self.writer.write_labels, pending)
        await self._send_dead_letters(producer, pending.dead_letters)
        assigned = consumer.assignment()
        offsets = {tp: o for tp, o in ((TopicPartition(*k), o) for k, o in pending.offsets.items()) if tp in assigned}
        try:
            if offsets:
                await consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:  # rebalanced meanwhile
            log.warning("commit after an offline flush refused (%s); the partitions' new owner "
                        "re-reads from the last committed offsets (labels dedupe by label_id)", exc)
        log.debug("flushed %d rows and %d labels offline; offsets committed", pending.rows, len(pending.labels))
        try:  # after the commit: the parts it merges are written; a failure costs only disk
            await asyncio.to_thread(self.writer.compact)
        except Exception as exc:
            metrics.SINK_WRITE_FAILURES.labels("compact").inc()
            log.warning("compacting the offline part files failed (%s: %s); retried after the next flush",
                        type(exc).__name__, exc)

    async def run(self) -> None:
        """Poll -> write online at once (freshness) -> keep as pending offline rows -> every
        ``offline_flush_seconds`` / ``offline_flush_rows`` append one part file per entity and
        the new labels, *beside* the next polls -> commit what that flush wrote. Offsets are
        committed only after both writes of everything they cover, so a crash anywhere
        redelivers instead of dropping."""
        from aiokafka import AIOKafkaConsumer

        from convcg.kafka.io import json_producer

        consumer = AIOKafkaConsumer(
            self.topics.feature_updates, self.topics.labels, bootstrap_servers=self.bootstrap,
            group_id=self.settings.consumer_group, enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_interval_ms=30 * 60 * 1000,
            **self.settings.fetch.aiokafka())
        producer = json_producer(self.bootstrap, acks="all")
        await consumer.start()
        log.info("sink consuming %s and %s from %s (group %s)", self.topics.feature_updates,
                 self.topics.labels, self.bootstrap, self.settings.consumer_group)
        pending = PendingOffline()  # written online, not yet offline / committed
        flushing: asyncio.Task | None = None  # at most one offline flush at a time, in order
        try:
            while True:
                if flushing is not None and flushing.done():
                    flushing, done = None, flushing
                    done.result()  # SinkStopped if stopped while its write was failing
                if self.stop_requested.is_set():
                    break
                if flushing is not None and pending.rows >= self.settings.offline_flush_rows:
                    await asyncio.wait({flushing})  # the offline store is behind: hold the polls
                    continue
                await self._poll_once(consumer, producer, pending)
                if flushing is None and self._flush_due(pending):
                    flushing = asyncio.create_task(self._flush(consumer, producer, pending))
                    pending = PendingOffline()
            if flushing is not None:
                await flushing
            if pending:
                await self._flush(consumer, producer, pending)
        except SinkStopped as exc:
            log.warning("%s; uncommitted records will be redelivered on restart", exc)
        finally:
            if flushing is not None and not flushing.done():
                flushing.cancel()
            await consumer.stop()
            await asyncio.to_thread(producer.close)
            log.info("sink stopped after %d batches", self.batches_written)

    async def _poll_once(self, consumer, producer, pending: PendingOffline) -> None:
        polled = await consumer.getmany(timeout_ms=self.settings.batch_max_wait_ms,
                                        max_records=self.settings.batch_max_records)
        records = [r for rs in polled.values() for r in rs]
        if not records:
            return
        t0 = time.perf_counter()
        batch = decode_records(records, self.topics)
        await self._write_with_retry("online", self.writer.write_online, batch)
        refused = pending.add(batch.updates, batch.labels, records, time.monotonic())
        batch.dead_letters += unwritable(refused, batch.sources, "unwritable_feature_update")
        pending.sources.update((id(lab), batch.sources[id(lab)]) for _, lab in batch.labels)
        await self._send_dead_letters(producer, batch.dead_letters)
        self.batches_written += 1
        metrics.SINK_BATCH_SECONDS.observe(time.perf_counter() - t0)

    async def _send_dead_letters(self, producer, raws: list[bytes]) -> None:
        """Send and acknowledge the dead letters before the offsets covering them can be committed."""
        for raw in raws:
            producer.send(self.topics.dead_letters, raw)
            dl = decode_dead_letter(raw)
            metrics.SINK_DEAD_LETTERS.labels(dl.topic).inc()
            log.warning("dead-lettered %s[%s]@%s: %s (%s)", dl.topic, dl.partition, dl.offset, dl.reason, dl.detail)
        if raws:
            await asyncio.to_thread(producer.flush)


class BackgroundSink:
    """Runs a ``FeatureSink`` on its own event loop in a thread (tests, benches, ``serve``)."""

    def __init__(self, sink: FeatureSink):
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._main, name="features-sink", daemon=True)
        self.error: BaseException | None = None

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.sink.stop_requested = asyncio.Event()
        try:
            self.loop.run_until_complete(self.sink.run())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> "BackgroundSink":
        self.thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.sink.stop_requested.set)
            self.thread.join(timeout)
        if self.error:
            raise self.error
