"""CPU cost of the worker's own per-batch code, without Kafka and without Faust.

    python -m bench.perf.join_cpu [--impressions 60000] [--batch 5000] [--repeat 5] [--profile]

Feeds a seeded synthetic log, as Faust-shaped records, through `JoinProcessor.process` (parse and
validate, the label join, serialising labels and join states, the ack bookkeeping). The
broker-facing parts are replaced by sinks that only count (the producer, the commit, the table's
changelog), so the figure is the join's own CPU cost per event: the part a faster framework
could not remove. It is process time (CPU seconds of this process), which other load on a shared
machine inflates far less than wall time, and the best of ``--repeat`` runs. Compare with
`bench.perf.label_join`, which runs the real worker against a real broker.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import statistics
import time

import orjson

from convcg.contract import Topics, event_to_dict
from convcg.partitioning import partition_for
from convcg.process.runtime import tune_garbage_collector
from streams.label_join.processor import JoinProcessor
from streams.label_join.state import JoinStateChangelog
from streams.replay.datasets import load_log
from streams.settings import StreamSettings


class Record:  # the fields of a Faust message the processor reads
    __slots__ = ("topic", "partition", "offset", "value", "key", "timestamp", "tp", "generation_id")

    def __init__(self, topic: str, partition: int, offset: int, value: bytes, key: bytes) -> None:
        self.topic, self.partition, self.offset, self.value, self.key = topic, partition, offset, value, key
        self.timestamp, self.tp, self.generation_id = time.time(), (topic, partition), 1


class Event:
    __slots__ = ("message",)

    def __init__(self, message: Record) -> None:
        self.message = message


class CountingOutput:
    def __init__(self) -> None:
        self.sent = 0

    def send(self, *args) -> None:
        self.sent += 1

    async def flush(self) -> None:
        pass


class Consumer:  # the consumer port, answering as a consumer that knows no offsets yet
    generation_id = 1

    @staticmethod
    def tp(topic, partition):
        return (topic, partition)

    @staticmethod
    def committed(tp) -> None:
        return None

    @staticmethod
    async def committed_on_broker(tps) -> dict:
        return dict.fromkeys(tps)

    @staticmethod
    def highwater(tp) -> None:
        return None

    @staticmethod
    async def commit(offsets) -> None:
        pass

    @staticmethod
    async def read_range(tp, start, end) -> list:
        return []

    partition_count = 3

    def partitions(self, topic) -> int:  # every event's placement is checked, as in the worker
        return self.partition_count


class Table:
    def __init__(self) -> None:
        self.data: dict = {}

    class changelog_topic:
        @staticmethod
        def get_topic_name() -> str:
            return "changelog"


def feed(processor: JoinProcessor, raw: list[tuple], batch: int, prof: cProfile.Profile | None) -> tuple[float, float]:
    """Hand ``raw`` to the processor in batches; returns (wall, CPU) seconds spent in `process`.
    Each batch's Faust-shaped records are made just before it (untimed) and dropped after, as
    the worker holds only the batch in flight."""
    wall = cpu = 0.0

    async def run() -> None:
        nonlocal wall, cpu
        for i in range(0, len(raw), batch):
            events = [Event(Record(*r)) for r in raw[i:i + batch]]
            t0, c0 = time.perf_counter(), time.process_time()
            if prof:
                prof.enable()
            await processor.process(events)
            if prof:
                prof.disable()
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0

    asyncio.run(run())
    return wall, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5, help="runs, each on a fresh processor; the best is reported")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    import faust.types  # noqa: F401  (the worker imports it lazily; a running worker has it loaded)

    topics = Topics("")
    topic_of = {"Impression": topics.impressions, "Engagement": topics.engagements, "Conversion": topics.conversions}
    log = load_log("synthetic", n_impressions=args.impressions, seed=0)
    offsets: dict = {}
    raw = []
    for e in log.events:
        topic, p = topic_of[type(e).__name__], partition_for(e.user_id.encode(), args.partitions)
        off = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
        raw.append((topic, p, off, orjson.dumps(event_to_dict(e)), e.user_id.encode()))
    del log
    settings = StreamSettings(idle_source_after_s=0)
    tune_garbage_collector(settings.gc_gen0_threshold)  # as `run_worker` does
    cpus, walls = [], []
    for _ in range(1 if args.profile else args.repeat):
        output = CountingOutput()
        changelog = JoinStateChangelog("", Table(), output)
        changelog.read = lambda partition: {}  # a fresh start: no changelog to restore from
        consumer = Consumer()
        consumer.partition_count = args.partitions
        processor = JoinProcessor(settings, consumer, changelog, output)
        prof = cProfile.Profile(time.process_time) if args.profile else None
        wall, cpu = feed(processor, raw, args.batch, prof)
        walls.append(wall / len(raw) * 1e6)
        cpus.append(cpu / len(raw) * 1e6)
        del processor
    print(f"events: {len(raw):,}  batch: {args.batch}  records out: {output.sent:,}"
          + ("  (under cProfile)" if prof else ""))
    print("join's own CPU per run (µs/event): " + " ".join(f"{c:.1f}" for c in cpus))
    print(f"join's own CPU: {min(cpus):.1f} µs/event (best of {len(cpus)}; median {statistics.median(cpus):.1f}); "
          f"wall: best {min(walls):.1f} µs/event = {1e6 / min(walls):,.0f} events/s")
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)


if __name__ == "__main__":
    main()
