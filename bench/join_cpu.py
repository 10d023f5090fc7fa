"""CPU cost of the worker's own per-batch code, without Kafka and without Faust.

    python -m bench.join_cpu [--impressions 60000] [--batch 5000] [--profile]

Feeds a seeded synthetic log, as Faust-shaped records, through `JoinProcessor.process` (parse and
validate, the label join, the streaming aggregates, serialising labels / states / feature
updates). The broker-facing parts are replaced by sinks that only count (the producer, the
commit, the table's changelog), so the figure is the join's own CPU cost per event: the part a
faster framework could not remove. Compare with `bench.label_join`, which runs the real
worker against a real broker.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import time
import zlib

import orjson

from convcg.contract import Topics, event_to_dict
from streams.datasets import load_log
from streams.join_processor import JoinProcessor
from streams.join_state import JoinStateChangelog
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


class Table:
    def __init__(self) -> None:
        self.data: dict = {}

    class changelog_topic:
        @staticmethod
        def get_topic_name() -> str:
            return "changelog"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=60_000)
    ap.add_argument("--batch", type=int, default=5000)
    ap.add_argument("--partitions", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    topics = Topics("")
    topic_of = {"Impression": topics.impressions, "Engagement": topics.engagements, "Conversion": topics.conversions}
    log = load_log("synthetic", n_impressions=args.impressions, seed=0)
    offsets: dict = {}
    records = []
    for e in log.events:
        topic, p = topic_of[type(e).__name__], zlib.crc32(e.user_id.encode()) % args.partitions
        off = offsets[(topic, p)] = offsets.get((topic, p), -1) + 1
        records.append(Event(Record(topic, p, off, orjson.dumps(event_to_dict(e)), e.user_id.encode())))
    output = CountingOutput()
    changelog = JoinStateChangelog("", Table(), output)
    changelog.read = lambda partition: {}  # a fresh start: no changelog to restore from
    processor = JoinProcessor(StreamSettings(idle_source_after_s=0), Consumer(), changelog, output)

    async def run() -> None:
        for i in range(0, len(records), args.batch):
            await processor.process(records[i:i + args.batch])

    prof = cProfile.Profile() if args.profile else None
    t0 = time.perf_counter()
    if prof:
        prof.enable()
    asyncio.run(run())
    if prof:
        prof.disable()
    dt = time.perf_counter() - t0
    print(f"events: {len(records):,}  batch: {args.batch}  records out: {output.sent:,}")
    print(f"join's own code: {len(records) / dt:,.0f} events/s  ({dt / len(records) * 1e6:.1f} µs/event)"
          + ("  (under cProfile)" if prof else ""))
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
