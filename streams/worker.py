"""The Faust worker: validation and the label join. (The streaming feature aggregates run as
their own process, `streams.aggregates_worker`, so features do not queue behind the join.)

One agent reads the three co-partitioned event topics in batches (`stream.take_events`),
validates each record (bad ones go to the dead-letter topic), feeds a `LabelJoiner` per
partition, and once per batch:

- moves each partition's event-time watermark and applies what it passed;
- sends labels (key user_id, same partition number) and dropped events with their reason;
- writes the impression states that changed to a changelogged Faust table, explicitly to the
  partition they belong to (one write per changed impression per batch, not per event);
- marks the records whose effects are complete, and commits source offsets itself, strictly
  in offset order per partition (`streams.ack_order`; Faust's acks are off for the source
  topics, see there why): a record still in the reorder buffer holds back the commit of every
  later record of its partition, so a crash redelivers it instead of losing it.

On a rebalance the revoked partitions' in-memory joins and pending commits are dropped (after
the batch in flight has finished); Faust rewinds to the committed offsets, the joins are
rebuilt from the table, and records fetched before the rebalance are skipped.

Delivery is at-least-once (output is flushed before offsets are committed). Every
effect is idempotent: impression states dedupe redelivered events, and label ids are
deterministic, so a label re-sent after a crash carries the same `label_id` and consumers keep
one (see `streams.labels.dedupe`). Faust's `exactly_once` and `on_window_close` are not used
(open reports of duplicates/hangs; windows closing only on a later event for the same key).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from typing import Any

import orjson

from convcg.contract import Conversion, Topics, encode_label
from convcg.validation import InvalidEvent, Watermark, dead_letter, parse_event
from streams import metrics
from streams.ack_order import GAP, REPEAT, InOrderAcks
from streams.label_join import LabelJoiner
from streams.output import OutputProducer
from streams.settings import StreamSettings
from streams.watermark import PartitionWatermark

DEAD_LETTER_COMPONENT = "streams-worker"

log = logging.getLogger("convcg.streams.worker")

STATE_TABLE = "join-state"
_WM_KEY = "__watermark__:%d"


class JoinProcessor:
    """Everything the agent does with one batch, kept apart from Faust's wiring."""

    def __init__(self, settings: StreamSettings, app: Any, state_table: Any, output: OutputProducer) -> None:
        self.settings = settings
        self.app = app
        self.table = state_table
        self.output = output
        t = Topics(settings.topic_prefix)
        self.topics = t
        self._changelog: str | None = None
        self.source_topics = t.events
        self.type_of_topic = {t.impressions: "impression", t.engagements: "engagement", t.conversions: "conversion"}
        self.joiners: dict[int, LabelJoiner] = {}
        self.watermarks: dict[int, PartitionWatermark] = {}
        self._unsaved: list[tuple[int, list]] = []
        self.acks = InOrderAcks()
        self._to_commit: dict[Any, int] = {}
        self._last_commit = 0.0
        import asyncio

        self._lock = asyncio.Lock()
        self.batches = 0

    # --- state ---------------------------------------------------------------------------

    def joiner(self, partition: int) -> LabelJoiner:
        j = self.joiners.get(partition)
        if j is None:
            j = self.joiners[partition] = LabelJoiner(self.settings.rules)
            self.watermarks[partition] = PartitionWatermark(self.settings.rules.allowed_lateness_s,
                                                            self.settings.idle_source_after_s, time.monotonic())
            states, wm = [], -math.inf
            for key, value in self._read_state(partition).items():
                if not value or value.get("p") != partition:
                    continue
                if key == _WM_KEY % partition:
                    wm = value["wm"]
                else:
                    states.append(value["s"])
            j.restore(states, wm)
            self.watermarks[partition].value = wm
            log.info("partition %d: restored %d pending impressions, watermark %s", partition, len(states), wm)
        return j

    def _read_state(self, partition: int) -> dict:
        """The partition's join state, read from its changelog on the broker up to a fence
        written now (`streams.holes.read_partition_through_fence`). Not from the Faust table's
        recovered copy, nor up to the broker's end offset: on the bundled Tansu both missed the
        last writes before a SIGKILL (their records committed, their state absent, their labels
        never made), because its end offset leaves out all but the first record of the newest
        batch."""
        from streams.holes import read_partition_through_fence

        if self._changelog is None:
            self._changelog = self.table.changelog_topic.get_topic_name()
        raw = read_partition_through_fence(self.settings.bootstrap, self._changelog, partition)
        return {orjson.loads(k): (orjson.loads(v) if v is not None else None) for k, v in raw.items() if k}

    async def on_revoked(self, revoked: set) -> None:
        """Rebalance: after the batch in flight, forget the revoked partitions' joins (their
        state stays in the table) and never commit what was tracked for them."""
        async with self._lock:
            self.acks.forget(revoked)
            for tp in revoked:
                self._to_commit.pop(tp, None)
            for p in {tp.partition for tp in revoked if tp.topic in self.source_topics}:
                if self.joiners.pop(p, None) is not None:
                    del self.watermarks[p]
                    log.warning("partition %d revoked: in-memory join dropped, rebuilt from the table "
                                "when it is assigned again", p)

    def _persist(self, partition: int, key: str, value: dict | None) -> None:
        """Write one state entry to the table and its changelog (JSON key and value, as
        Faust's recovery decodes them); ``None`` is a tombstone."""
        if value is None:
            self.table.data.pop(key, None)
        else:
            self.table.data[key] = value
        if self._changelog is None:
            self._changelog = self.table.changelog_topic.get_topic_name()
        self.output.send(self._changelog, None if value is None else orjson.dumps(value), orjson.dumps(key), partition)

    # --- one batch -----------------------------------------------------------------------

    async def process(self, events: list[Any]) -> None:
        async with self._lock:
            await self._process(events)

    async def tick(self) -> None:
        """Re-evaluate every partition's watermark when no batch comes (sources going idle)."""
        async with self._lock:
            await self._process([])

    async def _process(self, events: list[Any]) -> None:
        now = time.time()
        touched: set[int] = set()
        events_in: Counter[str] = Counter()
        generation = self.app.consumer_generation_id
        track = self.acks.track
        committed = getattr(self.app.consumer, "_committed_offset", {})  # where Faust seeked to
        for ev in events:
            msg = ev.message
            if msg.generation_id != generation:
                continue  # fetched before a rebalance: redelivered from the committed offset
            # no committed offset (or 0: Faust maps it to None) means the group starts at the
            # beginning: a first record above 0 reveals records skipped at start-up
            entry = track(msg.tp, msg.offset, committed.get(msg.tp) or 0)
            if entry is REPEAT:
                metrics.REDELIVERED.labels(msg.topic).inc()
                continue
            if entry is GAP:  # records before this one were skipped by the consumer: read them
                for hole_msg in await self._read_hole(msg.tp, self.acks.expected(msg.tp), msg.offset):
                    self._take(hole_msg, track(hole_msg.tp, hole_msg.offset), now, touched, events_in)
                self.acks.skip_to(msg.tp, msg.offset)  # offsets left in the hole hold no record
                entry = track(msg.tp, msg.offset)
            self._take(msg, entry, now, touched, events_in)
        released = []
        if not events:
            touched = set(self.joiners)
        for partition in touched:
            released.extend(self._advance(partition))
        for etype, n in events_in.items():
            metrics.EVENTS_IN.labels(etype).inc(n)
        # 1) the labels this batch decided are on the broker, 2) only then the state saying they
        # were decided, 3) only then offsets are committed. A crash between 1 and 2 re-decides and
        # re-sends the same label_id (deduplicated downstream); never a state without its label.
        await self.output.flush()
        for partition, states in self._unsaved:
            for key, value in states:
                self._persist(partition, key, value)
        self._unsaved.clear()
        await self.output.flush()
        for entry in released:
            entry.done = True
        self._to_commit.update(self.acks.committable())
        if self._to_commit and time.monotonic() - self._last_commit >= self.settings.commit_interval_s:
            await self._commit()
        self.batches += 1

    def _take(self, msg: Any, entry: Any, now: float, touched: set[int], events_in: Counter) -> None:
        """Validate one record and hand it to its partition's join."""
        partition = msg.partition
        etype = self.type_of_topic.get(msg.topic)
        try:
            if etype is None:
                raise InvalidEvent("unknown_event_type", f"topic {msg.topic}")
            parsed = parse_event(etype, msg.value, now, self.settings.max_future_s)
        except InvalidEvent as exc:
            metrics.DEAD_LETTERS.labels(exc.reason).inc()
            self.output.send(self.topics.dead_letters, dead_letter(DEAD_LETTER_COMPONENT, msg.topic, partition,
                                                                   msg.offset, msg.value, exc.reason, exc.detail, now),
                             msg.key, partition)
            entry.done = True
            return
        joiner = self.joiner(partition)
        touched.add(partition)
        self.watermarks[partition].observe(msg.topic, parsed.ts, msg.offset, time.monotonic())
        if isinstance(parsed, Watermark):
            entry.done = True
            return
        events_in[etype] += 1
        joiner.add(parsed, entry)

    async def _read_hole(self, tp: Any, start: int, end: int) -> list:
        from streams.holes import read_hole

        metrics.HOLES_READ.labels(tp.topic).inc(end - start)
        log.warning("%s: offsets %d..%d were skipped by the consumer; reading them from the broker",
                    tp, start, end - 1)
        return await asyncio.to_thread(read_hole, self.settings.bootstrap, tp, start, end, self.app.consumer_generation_id)

    async def _commit(self) -> None:
        """Commit the offsets below which every record is done (Faust's own commit path:
        it skips partitions no longer assigned)."""
        offsets, self._to_commit = self._to_commit, {}
        self._last_commit = time.monotonic()
        await self.app.consumer._commit_offsets(offsets)

    def _advance(self, partition: int) -> list:
        joiner = self.joiners[partition]
        wm = self.watermarks[partition]
        highwaters = {t: self._highwater(t, partition) for t in self.source_topics}
        joiner.advance(wm.compute(highwaters, self.source_topics, self._committed(partition), time.monotonic()))
        out = joiner.drain()
        send, topics = self.output.send, self.topics
        kinds: Counter[str] = Counter()
        for label in out.labels:
            kinds[label.kind] += 1
            send(topics.labels, encode_label(label), label.user_id.encode(), partition)
        for kind, n in kinds.items():
            metrics.LABELS_OUT.labels(kind).inc(n)
        for event, reason in out.dropped:
            metrics.DROPPED.labels(reason).inc()
            event_json = orjson.dumps(_event_dict(event))
            if isinstance(event, Conversion):
                send(topics.unattributed, orjson.dumps({"reason": reason, "event": _event_dict(event)}),
                     event.user_id.encode(), partition)
            else:
                send(topics.dead_letters, dead_letter(DEAD_LETTER_COMPONENT, topics.of_event(event), partition, None,
                                                      event_json, reason, "dropped by the label join", time.time()),
                     event.user_id.encode(), partition)
        states = [(imp_id, None if st is None else {"p": partition, "s": st.to_dict()})
                  for imp_id, st in out.changed.items()]
        states.append((_WM_KEY % partition, {"p": partition, "wm": joiner.watermark}))
        self._unsaved.append((partition, states))
        metrics.WATERMARK.labels(str(partition)).set(joiner.watermark if math.isfinite(joiner.watermark) else 0)
        lag = wm.newest - joiner.watermark
        metrics.WATERMARK_LAG.labels(str(partition)).set(lag if math.isfinite(lag) else 0)
        metrics.BUFFERED.labels(str(partition)).set(joiner.buffered)
        metrics.PENDING.labels(str(partition)).set(len(joiner.impressions))
        return out.released

    def _committed(self, partition: int) -> dict[str, int | None]:
        """Committed offsets of this partition's sources (Faust keeps them; no public getter)."""
        from faust.types import TP

        known = getattr(self.app.consumer, "_committed_offset", {})
        return {t: known.get(TP(t, partition)) for t in self.source_topics}

    def _highwater(self, topic: str, partition: int) -> int | None:
        from faust.types import TP

        try:
            hw = self.app.consumer.highwater(TP(topic, partition))
        except Exception:
            return None
        if hw is not None:
            src = self.watermarks[partition].sources.get(topic)
            metrics.CONSUMER_LAG.labels(topic, str(partition)).set(max(0, hw - (src.next_offset if src else 0)))
        return hw


def tune_fetches(app: Any, wait_ms: int, min_bytes: int) -> None:
    """Faust builds its aiokafka consumer with a fixed ``fetch_max_wait_ms=1500``. A broker
    that holds an empty fetch for that long without waking on new records (Tansu does) makes
    every quiet-then-busy cycle cost up to 1.5 s of latency. There is no setting for it, so
    the running consumer's fetcher is told directly (aiokafka reads both per fetch request),
    with the fetch size to wait for (Faust asks for 1 byte: a fetch per trickle of records)."""
    thread = getattr(app.consumer, "_thread", None)
    fetcher = getattr(getattr(thread, "_consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms") or not hasattr(fetcher, "_fetch_min_bytes"):
        log.warning("cannot set the consumer's fetch wait (Faust/aiokafka internals changed)")
        return
    fetcher._fetch_max_wait_ms = wait_ms
    fetcher._fetch_min_bytes = min_bytes


def _event_dict(event: Any) -> dict:
    from convcg.contract import event_to_dict

    return event_to_dict(event)


def build_app(settings: StreamSettings):
    """The Faust app of one worker (one consumer group = ``settings.app_id``)."""
    import faust

    topics = Topics(settings.topic_prefix)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Faust makes only the last level
    app = faust.App(
        settings.app_id,
        broker=f"kafka://{settings.bootstrap}",
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
        Monitor="streams.quiet_monitor:QuietMonitor",  # no per-record stats for web views we don't serve
        producer_linger_ms=5,
        producer_max_batch_size=512 * 1024,
        consumer_max_fetch_size=8 * 1024 * 1024,
    )
    # acks=False: Faust neither tracks nor commits these offsets; the processor commits them
    source = app.topic(*topics.events, key_serializer="raw", value_serializer="raw", acks=False)
    table = app.Table(STATE_TABLE, partitions=settings.partitions)  # JSON keys and values
    processor = JoinProcessor(settings, app, table, OutputProducer(settings.bootstrap))
    app.join_processor = processor  # for introspection in tests / operators

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
        tune_fetches(app, settings.fetch_max_wait_ms, settings.fetch_min_bytes)

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
            log.warning("batches=%d partitions=%s watermark=%s pending=%d buffered=%d",
                     processor.batches, sorted(processor.joiners),
                     {p: round(j.watermark, 1) for p, j in processor.joiners.items()},
                     sum(len(j.impressions) for j in processor.joiners.values()),
                     sum(j.buffered for j in processor.joiners.values()))

    return app


def run_worker(settings: StreamSettings, loglevel: str = "warning") -> None:
    """Run the worker in the foreground until SIGINT/SIGTERM."""
    from faust.worker import Worker

    from convcg.broker import create_topics

    create_topics(settings.bootstrap, Topics(settings.topic_prefix).all(), settings.partitions)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)
    app = build_app(settings)
    from convcg.runtime import tune_garbage_collector

    tune_garbage_collector(settings.gc_gen0_threshold)
    log.info("streams worker %s on %s (topics prefix %r, %d partitions)", settings.app_id,
             settings.bootstrap, settings.topic_prefix, settings.partitions)
    Worker(app, loglevel=loglevel, quiet=True).execute_from_commandline()
