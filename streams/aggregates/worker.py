"""`convcg aggregates`: the streaming feature aggregates, scaled out over a consumer group.

The topology and the counting are `streams.aggregates.counting` (the pure stages are
`streams.aggregates.stage`); this module adds the consumer group, the restores and the
checkpoints.

Every aggregates worker is one aiokafka consumer in one consumer group (``aggregates_group``)
subscribed to the three event topics and the two repartition topics, with the range assignor:
the topics have the same partition count, so partition p of all five goes to one member, and
the three event topics stay co-partitioned (a user's events meet in one user stage). The
repartition records are written by the project's librdkafka producer (`streams.kafka.output`),
which places keys with the contract's partitioner (`convcg.partitioning`). Adding a worker to
the group moves partitions to it; a worker that dies has its partitions moved to the others
after ``session_timeout_s``.

Why aiokafka and not a Faust agent with ``group_by`` and tables: every event crosses three
stages, and Faust's per-record path (~60-70 µs per record here, `bench/perf/label_join.py`'s
no-op agent) would cost several times the counting itself at each of them; a batched consumer
and librdkafka keep the per-record cost at the counting (the README's table has the figures).
The group, the rebalance and changelogged state are what Faust would give, done explicitly.

State and restart. Every ``aggregates_state_flush_s`` the worker sends the current feature
updates and checkpoints in the one commit order (`streams.kafka.checkpoint`): the updates on the
broker, then what changed in each stage partition written to that stage's compacted changelog
(`streams.aggregates.changelog`, stamped with the consumer's positions) and acknowledged, then
the positions committed. On assignment, a stage partition is restored by reading its
changelog partition to its end (`streams.kafka.changelog_read`, in threads, off the event loop) and the consumer resumes at the committed offsets: a restart re-reads at
most one state flush of the log (the bounded tail), and a record of that tail counts exactly
once (the stage's positions and seen ids decide). Restore time follows the state, not the
retained log. Until a stage partition has reached the end offsets seen at its assignment it
sends no update; then it sends the current values of every entity it holds once and goes live.

Rebalances. aiokafka may hand out a new assignment's records before its assignment callback
has restored the stage partition, and a revocation's flush may run while the loop holds polled
records it has not counted yet. Neither may move a committed position past a record no stage
counted: a flush stamps and commits at most the first polled-but-uncounted offset
(``pending_from``), records polled before a rebalance are not counted (``generation``), and
records of a stage partition not restored yet are read again (``unowned``, a seek back).

"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections import Counter
from typing import Any

from convcg.contract import Topics
from streams import metrics
from streams.aggregates.changelog import restore_stage, state_records
from streams.aggregates.counting import AggregatesCounter
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.stage import STAGES, USER, StageAggregator
from streams.kafka.checkpoint import Checkpoint
from streams.settings import StreamSettings

log = logging.getLogger(__name__)


class RestoreFailed(RuntimeError):
    """A stage partition's state could not be restored: the worker exits with an error."""


class AggregatesWorker(AggregatesCounter):
    """The loop of `convcg aggregates` around its broker-free core (`AggregatesCounter`)."""

    def __init__(self, settings: StreamSettings, output: Any | None = None,
                 aggregate_settings: AggregateSettings | None = None) -> None:
        super().__init__(settings, output, aggregate_settings)
        self.group_id = settings.aggregates_group or f"{settings.kafka.topic_prefix}convcg-aggregates"
        self.checkpoint = Checkpoint(self.output)
        self.targets: dict[tuple[str, int], int] = {}  # (topic, partition) -> end offset at assignment
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> the consumer's next offset
        #: bumped by every rebalance callback: records polled before one are stale (the
        #: consumer restarts every assigned partition at its committed offset after it)
        self.generation = 0
        #: (topic, partition) -> offset of the first record polled but not yet counted: a flush
        #: (the revocation's too) must not stamp or commit a position past it
        self.pending_from: dict[tuple[str, int], int] = {}
        self.restore_seconds: float | None = None
        #: (topic, partition) -> monotonic time of the first record polled since its last commit,
        #: and the offset after the newest polled (a commit at or past it clears the first)
        self.uncommitted_since: dict[tuple[str, int], float] = {}
        self.polled_upto: dict[tuple[str, int], int] = {}
        self.stop_requested = asyncio.Event()
        self.failure: BaseException | None = None  # why the worker cannot go on (a failed restore)
        self._lock = asyncio.Lock()  # the loop's processing vs the rebalance callbacks
        self._assigned_at = time.monotonic()

    # --- state -----------------------------------------------------------------------------

    def _restore(self, key: tuple[str, int]) -> StageAggregator:
        from streams.kafka.changelog_read import read_partition

        stage, partition = key
        records = read_partition(self.settings.kafka.bootstrap, self.topics.aggregates_changelog(stage), partition,
                                 self.settings.restore_timeout_s)
        return restore_stage(stage, records, self.aggregate_settings)

    async def _read_positions(self, consumer, tps) -> None:
        from aiokafka import TopicPartition

        for topic, partition in tps:
            self.positions[(topic, partition)] = await consumer.position(TopicPartition(topic, partition))

    async def _flush_state(self, consumer, keys) -> None:
        """Send the live partitions' updates, then checkpoint (`streams.kafka.checkpoint`): each
        stage partition's changes go to its changelog stamped with the consumer's positions,
        and those positions are committed once the broker has everything."""
        keys = set(keys) & set(self.stages)
        if not keys:
            return
        self.send_updates(time.time(), keys)
        offsets: dict = {}

        async def write_state() -> None:
            from aiokafka import TopicPartition

            for key in keys:
                tps = self._source_tps(key)
                await self._read_positions(consumer, tps)
                for tp in tps:  # records polled but not counted yet are not in the state
                    if tp in self.pending_from:
                        self.positions[tp] = min(self.positions[tp], self.pending_from[tp])
                records = state_records(self.stages[key], [self.positions[tp] for tp in tps])
                topic, partition = self.topics.aggregates_changelog(key[0]), key[1]
                for k, v in records:
                    self.output.send(topic, v, k, partition)
                metrics.AGG_STATE_RECORDS.labels(key[0]).inc(len(records))
                offsets.update({TopicPartition(t, p): self.positions[(t, p)] for t, p in tps})

        async def commit(positions) -> None:
            from aiokafka.errors import CommitFailedError, IllegalStateError

            try:
                await consumer.commit(dict(positions))
            except (CommitFailedError, IllegalStateError) as exc:  # rebalanced meanwhile: the next owner re-reads the tail
                log.warning("aggregates: commit skipped (%s)", exc)
                return
            for tp, offset in positions.items():
                key = (tp.topic, tp.partition)
                if offset >= self.polled_upto.get(key, 0):
                    self.uncommitted_since.pop(key, None)

        # a delivery error raises out of it: the worker stops and restarts from the last commit
        await self.checkpoint.commit(write_state, lambda: offsets, commit)

    async def on_assigned(self, consumer, assigned) -> None:
        """Restore the newly assigned stage partitions from their changelogs. A restore that
        fails stops the worker with an error (`RestoreFailed`): aiokafka swallows what an
        assignment callback raises, and the partition would be left without a stage, its
        records read again forever."""
        try:
            await self._on_assigned(consumer, assigned)
        except Exception as exc:  # noqa: BLE001 - anything: the worker cannot do its work
            log.exception("aggregates: restoring the assigned partitions failed; stopping with an error "
                          "so that the supervisor restarts the worker")
            self.failure = exc
            self.stop_requested.set()

    async def _on_assigned(self, consumer, assigned) -> None:
        async with self._lock:
            self.generation += 1
            t0 = time.monotonic()
            new = sorted({(self.stage_of[tp.topic][0], tp.partition) for tp in assigned
                          if tp.topic in self.stage_of} - set(self.stages))
            restored = await asyncio.gather(*(asyncio.to_thread(self._restore, key) for key in new))
            self.stages.update(zip(new, restored))
            ends = await consumer.end_offsets(list(assigned))
            self.targets.update({(tp.topic, tp.partition): end for tp, end in ends.items()})
            self.restore_seconds = time.monotonic() - t0
            metrics.AGG_STAGE_PARTITIONS.set(len(self.stages))
            self._assigned_at = time.monotonic()
            metrics.AGG_RESTORE_SECONDS.set(self.restore_seconds)
            metrics.AGG_RESTORED_ENTITIES.set(sum(len(s.table) for s in restored))
            log.info("aggregates: restored %d stage partitions %s in %.2fs (%d entities, %d seen ids); "
                        "end offsets now %d in all", len(new), new, self.restore_seconds,
                        sum(len(s.table) for s in restored), sum(len(s.seen) for s in restored),
                        sum(ends.values()))

    async def on_revoked(self, consumer, revoked) -> None:
        """Flush and commit the revoked stage partitions, then forget them (their state is on
        the changelog for the next owner)."""
        async with self._lock:
            self.generation += 1
            keys = {(self.stage_of[tp.topic][0], tp.partition) for tp in revoked if tp.topic in self.stage_of}
            try:
                await self._flush_state(consumer, keys)
            except Exception:  # noqa: BLE001 - the next owner restores and re-reads the tail instead
                log.exception("aggregates: flushing revoked partitions failed")
            for key in keys:
                self.stages.pop(key, None)
                self.live_stages.discard(key)
            for tp in revoked:
                self.targets.pop((tp.topic, tp.partition), None)
                self.positions.pop((tp.topic, tp.partition), None)
                self.uncommitted_since.pop((tp.topic, tp.partition), None)
                self.polled_upto.pop((tp.topic, tp.partition), None)
            metrics.forget_partitions(metrics.AGG_OLDEST_UNCOMMITTED, revoked)
            metrics.AGG_STAGE_PARTITIONS.set(len(self.stages))
            log.info("aggregates: revoked %s", sorted(keys))

    async def _check_live(self, consumer) -> None:
        for key in set(self.stages) - self.live_stages:
            tps = self._source_tps(key)
            await self._read_positions(consumer, tps)
            if self.caught_up(self.positions, {tp: self.targets.get(tp, 0) for tp in tps}):
                self.live_stages.add(key)
                self.stages[key].touch_all()  # its current values, once
                if self.live:
                    metrics.AGG_CATCHUP_SECONDS.set(time.monotonic() - self._assigned_at)
                    log.info("aggregates: live on %d stage partitions", len(self.stages))

    # --- the loop --------------------------------------------------------------------------

    async def run(self) -> None:
        from aiokafka import AIOKafkaConsumer
        from aiokafka.abc import ConsumerRebalanceListener
        from aiokafka.coordinator.assignors.range import RangePartitionAssignor

        s, worker = self.settings, self
        consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka.bootstrap, group_id=self.group_id, enable_auto_commit=False,
            auto_offset_reset="earliest", **s.aggregates_fetch.aiokafka(),
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=int(s.session_timeout_s * 1000), heartbeat_interval_ms=int(s.session_timeout_s * 250))

        class Rebalance(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked) -> None:
                await worker.on_revoked(consumer, revoked)

            async def on_partitions_assigned(self, assigned) -> None:
                await worker.on_assigned(consumer, assigned)

        self.managed = True
        await consumer.start()
        try:
            consumer.subscribe(list(self.stage_of), listener=Rebalance())
            log.info("aggregates: group %s on %s", self.group_id, sorted(self.stage_of))
            await self._loop(consumer)
            if self.failure is not None:  # no flush: what it holds may be incomplete
                raise RestoreFailed(f"restoring the assigned partitions failed: {self.failure!r}") from self.failure
            async with self._lock:
                await self._flush_state(consumer, list(self.stages))
        finally:
            await consumer.stop()
            await self.output.flush()

    async def _loop(self, consumer) -> None:
        s = self.settings
        last_flush = last_state = last_report = last_evict = time.monotonic()
        while not self.stop_requested.is_set():
            polled = await consumer.getmany(timeout_ms=s.aggregates_poll_timeout_ms,
                                            max_records=s.aggregates_poll_max_records)
            # no await between the poll and here: a rebalance callback sees these as pending
            generation = self.generation
            self.pending_from = {(tp.topic, tp.partition): records[0].offset for tp, records in polled.items() if records}
            self._note_polled(polled)
            async with self._lock:
                now = time.time()
                self._count_polled(consumer, polled, generation, now)
                if len(self.live_stages) < len(self.stages):
                    await self._check_live(consumer)
                mono = time.monotonic()
                if mono - last_state >= s.aggregates_state_flush_s:
                    last_state = last_flush = mono
                    await self._flush_state(consumer, list(self.stages))
                elif mono - last_flush >= s.feature_flush_interval_s:
                    last_flush = mono
                    self.send_updates(now)
                    self.output.poll()
                if mono - last_report >= s.aggregates_report_every_s:
                    last_report = mono
                    self._export_lag(consumer)
                if mono - last_evict >= s.aggregates_evict_every_s:
                    last_evict = mono
                    evicted = sum(stage.evict_inactive() for stage in self.stages.values())
                    if evicted:
                        log.info("aggregates: evicted %d inactive entities", evicted)

    def _note_polled(self, polled: dict) -> None:
        mono = time.monotonic()
        for tp, records in polled.items():
            if records:
                key = (tp.topic, tp.partition)
                self.uncommitted_since.setdefault(key, mono)
                self.polled_upto[key] = max(self.polled_upto.get(key, 0), records[-1].offset + 1)

    def _count_polled(self, consumer, polled: dict, generation: int, now: float) -> None:
        """Count one poll's records, unless a rebalance ran since the poll (``generation``):
        then, as for records of a stage partition not restored yet, the partitions still
        assigned are read again from the first of them."""
        counts: Counter[str] = Counter()
        if generation == self.generation:
            for tp, records in polled.items():
                counts.update(self.count(tp.topic, records, now))
        else:
            for tp, records in polled.items():
                if records:
                    self.unowned.setdefault((tp.topic, tp.partition), records[0].offset)
            log.info("aggregates: %d records polled before a rebalance, not counted",
                     sum(len(r) for r in polled.values()))
        self.pending_from = {}
        self._reread_unowned(consumer)
        for key, n in counts.items():
            kind, _, name = key.partition(":")
            if kind == "skipped":
                metrics.AGG_SKIPPED.labels(name).inc(n)
            elif kind == "stage":
                metrics.AGG_STAGE_RECORDS.labels(name).inc(n)
            else:
                metrics.AGG_EVENTS_IN.labels(key).inc(n)
                metrics.AGG_STAGE_RECORDS.labels(USER).inc(n)

    def _reread_unowned(self, consumer) -> None:
        """Seek back to records read before their stage partition was restored, so they are
        counted once it is (a partition no longer assigned is the next owner's)."""
        from aiokafka import TopicPartition

        if not self.unowned:
            return
        assigned = consumer.assignment()
        for (topic, partition), offset in self.unowned.items():
            tp = TopicPartition(topic, partition)
            if tp in assigned:
                consumer.seek(tp, offset)
        log.info("aggregates: %d partitions read again from their first uncounted record", len(self.unowned))
        self.unowned = {}

    def _export_lag(self, consumer) -> None:
        refused: Counter[tuple[str, str]] = Counter()
        for (stage, _), st in self.stages.items():
            for reason in ("too_late", "duplicates"):
                refused[(stage, reason)] += st.stats[reason]
        for (stage, reason), n in refused.items():
            metrics.AGG_REFUSED.labels(stage, reason).set(n)
        mono = time.monotonic()
        metrics.export_oldest_uncommitted(metrics.AGG_OLDEST_UNCOMMITTED, {
            (tp.topic, tp.partition): self.uncommitted_since.get((tp.topic, tp.partition)) for tp in consumer.assignment()},
            mono)
        for tp in consumer.assignment():
            hw = consumer.highwater(tp)
            if hw is not None:
                nxt = self.positions.get((tp.topic, tp.partition), 0)
                metrics.AGG_LAG.labels(tp.topic, str(tp.partition)).set(max(0, hw - nxt))


def run_aggregates(settings: StreamSettings) -> None:
    """Run `convcg aggregates` in the foreground until SIGINT/SIGTERM."""
    from convcg.kafka.broker import create_topics, topic_partitions
    from convcg.process.runtime import run_until_signalled

    topics = Topics(settings.kafka.topic_prefix)
    create_topics(settings.kafka.bootstrap, topics.all(), settings.partitions)
    inputs = (*topics.events, topics.aggregates_by_item, topics.aggregates_by_advertiser,
              *(topics.aggregates_changelog(s) for s in STAGES))
    counts = topic_partitions(settings.kafka.bootstrap, inputs)
    if len(set(counts.values())) != 1 or len(counts) != len(inputs):
        raise SystemExit(f"convcg aggregates needs its topics with one partition count (co-partitioned), got {counts}")
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    # the state is millions of small lists and tuples that live long: a young-generation
    # collection every 700 allocations would keep re-scanning them
    gc.set_threshold(*settings.aggregates_gc_thresholds)
    worker = AggregatesWorker(settings)
    try:
        run_until_signalled(worker.stop_requested, worker.run)
    except RestoreFailed as exc:  # logged with its cause; a non-zero exit for the supervisor
        raise SystemExit(f"convcg aggregates: {exc}") from None
