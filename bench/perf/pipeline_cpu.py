"""CPU per raw event of each stage of the raw event -> online feature path, in one process,
without a broker (so the figures do not depend on what else runs on the shared cores).

    python -m bench.perf.pipeline_cpu [--rate 5000] [--seconds 20] [--users 20000] [--items 5000]

The load is `bench.system.pipeline_freshness`'s (80% impressions, 20% engagements, users and items
drawn uniformly, event times at a steady ``--rate``). The aggregates worker's broker-free core
(`streams.aggregates.worker.AggregatesWorker`) counts it as `convcg aggregates` does: polls of
the user stage, the records it forwards read by the item stage, then by the advertiser stage,
feature updates sent every ``feature_flush_interval_s`` of event time and the changelog state
written every ``aggregates_state_flush_s``, into an in-memory producer. The feature updates it
sent then go through the features sink's core (`features.sink.worker`): decode, online write (the
fast rows into a private redis-server, Feast's SQLite when there is none), pending offline
rows and the parquet flush. Prints process CPU µs per raw event of every step, and the bytes
the aggregates send per raw event (what the broker stores and the sink fetches).

Runs against whichever checkout is first on PYTHONPATH (only APIs every version has).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import uuid
from collections import defaultdict
from pathlib import Path

import numpy as np
import orjson

SINK_GC = (700, 10, 10)  # `convcg features sink` keeps CPython's default collector thresholds


class Rec:  # the fields of an aiokafka ConsumerRecord the worker and the sink read
    __slots__ = ("topic", "partition", "offset", "key", "value", "timestamp")

    def __init__(self, topic: str, partition: int, offset: int, key: bytes | None, value: bytes, ts_ms: int) -> None:
        self.topic, self.partition, self.offset, self.key, self.value, self.timestamp = (
            topic, partition, offset, key, value, ts_ms)


class MemoryOutput:
    """The worker's producer, in memory: records by topic, partitioned by the contract."""

    def __init__(self, partitions: int) -> None:
        from convcg.partitioning import partition_for

        self.partitions, self._part = partitions, partition_for
        self.by_topic: dict[str, list[tuple[bytes | None, bytes]]] = defaultdict(list)
        self.bytes: dict[str, int] = defaultdict(int)
        self.records: dict[str, int] = defaultdict(int)

    def send(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.by_topic[topic].append((key, value))
        self.bytes[topic] += len(value) + (len(key) if key else 0)
        self.records[topic] += 1

    def take(self, topic: str, offsets: dict[tuple[str, int], int], ts_ms: int) -> list[Rec]:
        out = []
        for key, value in self.by_topic.pop(topic, ()):
            p = self._part(key, self.partitions) if key else 0
            o = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
            out.append(Rec(topic, p, o, key, value, ts_ms))
        return out


class Cpu:
    def __init__(self) -> None:
        self.s: dict[str, float] = defaultdict(float)

    def run(self, name: str, fn, *args):
        t0 = time.process_time()
        out = fn(*args)
        self.s[name] += time.process_time() - t0
        return out


def make_load(topics, n: int, users: int, items: int, partitions: int, rate: int, t0: float) -> list[list[Rec]]:
    """Raw event records in polls of about one feature flush (0.1 s of events)."""
    from convcg.partitioning import partition_for

    rng = np.random.default_rng(0)
    u, it, kinds = rng.integers(users, size=n), rng.integers(items, size=n), rng.random(n) < 0.8
    offsets: dict[tuple[str, int], int] = {}
    recs = []
    for k in range(n):
        ts = t0 + k / rate
        user, item = f"u{u[k]}", f"i{it[k]}"
        if kinds[k]:
            topic = topics.impressions
            body = {"event_id": f"bi-{k}", "impression_id": f"imp-{k}", "ts": ts, "user_id": user, "item_id": item,
                    "advertiser_id": f"a{hash(item) % 50}", "surface": "home", "position": 1}
        else:
            topic = topics.engagements
            body = {"event_id": f"be-{k}", "impression_id": f"imp-{k - 1}", "ts": ts, "user_id": user,
                    "item_id": item, "type": "click", "dwell_ms": 5000}
        key = user.encode()
        p = partition_for(key, partitions)
        o = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
        recs.append(Rec(topic, p, o, key, orjson.dumps(body), int(ts * 1000)))
    per_poll = max(1, rate // 10)
    return [recs[i:i + per_poll] for i in range(0, n, per_poll)]


def run_aggregates(polls: list[list[Rec]], partitions: int, cpu: Cpu) -> MemoryOutput:
    from convcg.contract import Topics
    from streams.aggregates.changelog import state_records
    from streams.aggregates.worker import AggregatesWorker
    from streams.settings import StreamSettings

    settings = StreamSettings()
    gc.set_threshold(*settings.aggregates_gc_thresholds)  # as `convcg aggregates` runs
    gc.freeze()  # the driver's load is not the worker's heap
    topics = Topics(settings.kafka.topic_prefix)
    out = MemoryOutput(partitions)
    worker = AggregatesWorker(settings, output=out)
    offsets: dict[tuple[str, int], int] = {}
    state_every = max(1, round(settings.aggregates_state_flush_s / settings.feature_flush_interval_s))
    for k, poll in enumerate(polls):
        ts = poll[-1].timestamp / 1000
        by_topic: dict[str, list[Rec]] = defaultdict(list)
        for r in poll:
            by_topic[r.topic].append(r)
        for topic, rs in by_topic.items():
            rs.sort(key=lambda r: r.partition)
            cpu.run("aggregates: user stage (parse, count, forward)", worker.count, topic, rs, ts + 1)
        for topic, stage in ((topics.aggregates_by_item, "item"), (topics.aggregates_by_advertiser, "advertiser")):
            rs = out.take(topic, offsets, poll[-1].timestamp)
            rs.sort(key=lambda r: r.partition)
            cpu.run(f"aggregates: {stage} stage", worker.count, topic, rs, ts + 1)
        cpu.run("aggregates: send feature updates (drain + JSON)", worker.send_updates, ts)
        if k % state_every == state_every - 1:
            def flush_state() -> None:
                for key, stage in worker.stages.items():
                    for rkey, value in state_records(stage, [0] * len(worker._source_tps(key))):
                        out.send(topics.aggregates_changelog(key[0]), value or b"", rkey)
            cpu.run("aggregates: state flush (changelog records)", flush_state)
    return out


def run_sink(out: MemoryOutput, runs: list[Cpu], store_dir: Path) -> str:
    from convcg.contract import Topics
    from features.settings import FeaturesSettings
    from features.sink.pending import PendingOffline
    from features.sink.worker import FeastWriter, decode_records
    from loop.online_store import start_online_store

    topics = Topics(FeaturesSettings().kafka.topic_prefix)
    private = start_online_store("auto", store_dir)
    try:
        extra = {"redis_connection": private.server.connection} if private.server else {}
        settings = FeaturesSettings(repo_dir=store_dir / "feast", labels_dir=store_dir / "labels",
                                    project=f"bench{uuid.uuid4().hex[:8]}", online_store=private.kind, **extra)
        writer = FeastWriter(settings)
        records = out.take(topics.feature_updates, {}, 0)
        gc.set_threshold(*SINK_GC)
        gc.freeze()
        batch_n = settings.batch_max_records
        polls = [records[i:i + batch_n] for i in range(0, len(records), batch_n)]
        for cpu in runs:  # the same records again: idempotent online writes, more offline parts
            pending = PendingOffline()
            for poll in polls:
                batch = cpu.run("sink: decode", decode_records, poll, topics)
                cpu.run(f"sink: online write ({private.kind})", writer.write_online, batch)
                cpu.run("sink: pending offline rows", pending.add, batch.updates, batch.labels, poll, time.monotonic())
                if pending.rows >= 5000:  # ~offline_flush_seconds of updates at 5,000 events/s
                    pending.created = datetime_now()
                    cpu.run("sink: offline parquet flush", writer.write_offline, pending)
                    pending = PendingOffline()
        return private.kind
    finally:
        private.stop()


def datetime_now():
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--skip-sink", action="store_true")
    ap.add_argument("--repeat", type=int, default=3, help="passes of each stage; the least CPU of them is printed")
    args = ap.parse_args()

    from convcg.contract import Topics

    n = int(args.rate * args.seconds)
    topics = Topics("")
    polls = make_load(topics, n, args.users, args.items, args.partitions, args.rate, time.time() - args.seconds)
    runs = []
    for _ in range(args.repeat):  # fresh state each time
        runs.append(Cpu())
        out = run_aggregates(polls, args.partitions, runs[-1])
    sent = {t: (out.records[t], out.bytes[t]) for t in out.bytes}  # of the last pass
    if not args.skip_sink:
        with tempfile.TemporaryDirectory() as tmp:
            run_sink(out, runs, Path(tmp))
    cpu = Cpu()
    for k in dict.fromkeys(k for r in runs for k in r.s):  # the least of the repeats: the least disturbed
        cpu.s[k] = min(r.s[k] for r in runs if k in r.s)
    print(f"{n:,} raw events ({args.rate:,}/s of event time for {args.seconds:.0f} s, {args.users:,} users, "
          f"{args.items:,} items); process CPU µs per raw event:")
    for group in ("aggregates", "sink"):
        rows = [(k, v) for k, v in cpu.s.items() if k.startswith(group)]
        for k, v in rows:
            print(f"  {k:52s} {v / n * 1e6:7.1f}")
        if rows:
            print(f"  {group + ' total':52s} {sum(v for _, v in rows) / n * 1e6:7.1f}")
    print("records and bytes the aggregates send per raw event (what the broker stores, the sink and the next stages fetch):")
    for t, (count, b) in sorted(sent.items()):
        print(f"  {t:40s} {count / n:6.3f} records  {b / n:8.1f} bytes")


if __name__ == "__main__":
    main()
