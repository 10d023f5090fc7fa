"""`JoinProcessor` through a stub consumer port: ordering, holes, restore and commits without
Faust or a broker (the port is the one place that talks to Faust; the worker against the real
broker is tested in test_label_join_worker.py)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import NamedTuple

import orjson

from convcg.contract import Impression, Topics, event_to_dict
from convcg.kafka.settings import KafkaSettings
from streams.label_join.processor import JoinProcessor
from streams.label_join.rules import LabelRules
from streams.label_join.state import WATERMARK_KEY, JoinStateChangelog
from streams.replay.watermarks import CLOSE_HEADERS, closing_watermark
from streams.settings import StreamSettings

TOPICS = Topics("jp-")
NOW = time.time() - 3600.0
GENERATION = 7


class TP(NamedTuple):
    topic: str
    partition: int


class Message:  # the fields of a Faust message the processor reads
    def __init__(self, topic: str, partition: int, offset: int | None, value: bytes, generation_id=GENERATION,
                 headers=None):
        self.topic, self.partition, self.offset, self.value, self.key = topic, partition, offset, value, b"u1"
        self.timestamp, self.tp, self.generation_id = NOW, TP(topic, partition), generation_id
        self.headers = headers


class Event:
    def __init__(self, message: Message) -> None:
        self.message = message


class StubConsumer:
    """The consumer port: offsets it is given, and a log of what the processor asked."""

    generation_id = GENERATION

    def __init__(self, committed=None, on_broker=None, holes=None) -> None:
        self.known = dict(committed or {})
        self.on_broker = dict(on_broker or {})
        self.holes = dict(holes or {})  # (tp, start, end) -> records
        self.commits: list[dict] = []
        self.ranges_read: list[tuple] = []
        self.broker_lookups: list[set] = []

    def tp(self, topic, partition):
        return TP(topic, partition)

    def partitions(self, topic):
        return self.partition_count

    partition_count: int | None = None  # unknown: placement not checked

    def committed(self, tp):
        return self.known.get(tp)

    async def committed_on_broker(self, tps):
        self.broker_lookups.append(set(tps))
        return {tp: self.on_broker.get(tp) for tp in tps}

    def highwater(self, tp):
        return None

    async def commit(self, offsets):
        self.commits.append(dict(offsets))
        self.known.update(offsets)

    async def read_range(self, tp, start, end):
        self.ranges_read.append((tp, start, end))
        return self.holes.get((tp, start, end), [])


class ListOutput:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    def send(self, topic, value, key=None, partition=None) -> None:
        self.sent.append((topic, value, key, partition))

    async def flush(self) -> None:
        pass

    def to(self, topic) -> list:
        return [orjson.loads(v) for t, v, _, _ in self.sent if t == topic and v is not None]


class Table:
    def __init__(self) -> None:
        self.data: dict = {}

    class changelog_topic:
        @staticmethod
        def get_topic_name() -> str:
            return "jp-changelog"


def imp_record(k: int, ts: float = NOW) -> bytes:
    return orjson.dumps(event_to_dict(Impression(f"e{k}", f"imp{k}", ts, "u1", f"i{k}", "a1", "home", 0)))


def closing() -> bytes:
    return orjson.dumps({"watermark": closing_watermark(NOW, LabelRules())})


def processor(consumer, restored: dict | None = None, read=None):
    output = ListOutput()
    changelog = JoinStateChangelog("unused:9092", Table(), output)
    decoded = read or (lambda partition: dict(restored or {}))
    changelog.read_raw = lambda partition: {orjson.dumps(k): None if v is None else orjson.dumps(v)
                                            for k, v in decoded(partition).items()}  # as on the broker
    settings = StreamSettings(kafka=KafkaSettings(topic_prefix="jp-"), commit_interval_s=1e-9, idle_source_after_s=0)
    return JoinProcessor(settings, consumer, changelog, output), output


def closing_batch(partition: int, offsets: dict[str, int]) -> list[Event]:
    """One producer watermark on each source topic: decides every impression before NOW."""
    return [Event(Message(t, partition, offsets.get(t, 0), closing(), headers=CLOSE_HEADERS)) for t in TOPICS.events]


def starts(partition: int, impressions_at: int) -> dict:
    """Committed offsets: the impressions topic at ``impressions_at``, the others at 0."""
    return {TP(t, partition): (impressions_at if t == TOPICS.impressions else 0) for t in TOPICS.events}


def test_a_batch_labels_persists_state_and_commits_in_offset_order():
    consumer = StubConsumer(committed=starts(0, 3))
    proc, out = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 0, off, imp_record(off))) for off in (3, 4)]))
    assert out.to(TOPICS.labels) == [] and consumer.commits == []  # held for the watermark
    asyncio.run(proc.process(closing_batch(0, {TOPICS.impressions: 5})))
    labels = out.to(TOPICS.labels)
    assert sorted((l["impression_id"], l["kind"]) for l in labels) == [("imp3", "negative"), ("imp4", "negative")]
    committed = {tp: off for c in consumer.commits for tp, off in c.items()}
    assert committed[TP(TOPICS.impressions, 0)] == 6  # both impressions and the watermark are done
    assert {TP(t, 0) for t in TOPICS.events} <= set(committed)
    written = {orjson.loads(k) for t, _, k, p in out.sent if t == "jp-changelog" and p == 0}
    assert WATERMARK_KEY % 0 in written and {"imp3", "imp4"} <= written
    assert consumer.ranges_read == [] and consumer.broker_lookups == []


def test_records_fetched_before_a_rebalance_are_skipped():
    consumer = StubConsumer(committed={TP(TOPICS.impressions, 1): 0})
    proc, out = processor(consumer)
    stale = Message(TOPICS.impressions, 1, 0, imp_record(0), generation_id=GENERATION - 1)
    asyncio.run(proc.process([Event(stale)]))
    assert proc.joiners == {} and out.sent == [] and consumer.commits == []


def test_a_partition_is_restored_from_its_changelog_when_first_seen():
    reads: list[int] = []

    def read(partition):
        reads.append(partition)
        return {WATERMARK_KEY % partition: {"p": partition, "wm": NOW - 10.0}}

    consumer = StubConsumer(committed={TP(TOPICS.impressions, 2): 8})
    proc, _ = processor(consumer, read=read)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 2, 8, imp_record(8)))]))
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 2, 9, imp_record(9)))]))
    assert reads == [2] and proc.joiners[2].watermark == NOW - 10.0


# --- defects of issue 13 ----------------------------------------------------------------------------------

def test_offsets_of_a_hole_that_hold_no_record_are_passed_over():
    """A hole read back from the broker can lack offsets (a transaction marker, a compacted
    record): the records around them are processed in order, nothing crashes."""
    tp = TP(TOPICS.impressions, 0)
    hole = [Message(TOPICS.impressions, 0, off, imp_record(off)) for off in (5, 6, 8)]  # 7 holds no record
    hole.insert(2, Message(TOPICS.impressions, 0, None, b""))  # a record without an offset
    consumer = StubConsumer(committed=starts(0, 5), holes={(tp, 5, 9): hole})
    proc, out = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 0, 9, imp_record(9)))]))
    assert consumer.ranges_read == [(tp, 5, 9)]
    asyncio.run(proc.process(closing_batch(0, {TOPICS.impressions: 10})))
    labels = out.to(TOPICS.labels)
    assert sorted(l["impression_id"] for l in labels) == ["imp5", "imp6", "imp8", "imp9"]
    assert max(c.get(tp, 0) for c in consumer.commits) == 11


def test_a_partition_whose_committed_offset_the_consumer_does_not_know_yet_asks_the_broker():
    """Not known yet is not "no committed offset": the processor asks the broker instead of
    reading everything before the first record as a hole."""
    tp = TP(TOPICS.impressions, 1)
    consumer = StubConsumer(committed={}, on_broker={tp: 40})
    proc, out = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 1, 40, imp_record(40)))]))
    assert consumer.ranges_read == []
    assert consumer.broker_lookups == [{tp}]
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 1, 43, imp_record(43)))]))
    assert consumer.ranges_read == [(tp, 41, 43)]  # a real hole after it is still read
    assert consumer.broker_lookups == [{tp}]  # asked once per partition


def test_no_committed_offset_on_the_broker_starts_the_partition_at_the_log_start():
    tp = TP(TOPICS.impressions, 2)
    consumer = StubConsumer(committed={}, on_broker={})
    proc, _ = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 2, 3, imp_record(3)))]))
    assert consumer.ranges_read == [(tp, 0, 3)]  # records skipped at start-up are read back


def test_the_event_loop_keeps_running_while_a_partition_is_restored():
    """The restore reads the changelog from the broker (up to minutes): it runs off the event
    loop, so heartbeats and timers go on meanwhile. The stub read waits for the loop to run a
    task; on the loop itself it could only time out."""
    loop_ran = threading.Event()
    waited: list[bool] = []

    def slow_read(partition):
        waited.append(loop_ran.wait(timeout=5.0))
        return {}

    consumer = StubConsumer(committed=starts(0, 0))
    proc, _ = processor(consumer, read=slow_read)

    async def main():
        async def tick():
            await asyncio.sleep(0.05)
            loop_ran.set()

        ticker = asyncio.create_task(tick())
        await proc.process([Event(Message(TOPICS.impressions, 0, 0, imp_record(0)))])
        await ticker

    asyncio.run(main())
    assert waited == [True]
    assert 0 in proc.joiners


def test_a_revoked_partitions_join_is_dropped_and_restored_when_assigned_again():
    reads: list[int] = []

    def read(partition):
        reads.append(partition)
        return {}

    tp = TP(TOPICS.impressions, 0)
    consumer = StubConsumer(committed=starts(0, 0))
    proc, _ = processor(consumer, read=read)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 0, 0, imp_record(0)))]))  # held by the join
    asyncio.run(proc.on_revoked({TP(t, 0) for t in TOPICS.events}))
    assert proc.joiners == {} and proc.watermarks == {}
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 0, 0, imp_record(0)))]))  # redelivered
    asyncio.run(proc.process(closing_batch(0, {TOPICS.impressions: 1})))
    assert reads == [0, 0]  # restored again from the changelog
    assert max(c.get(tp, 0) for c in consumer.commits) == 2


def test_an_event_on_another_partition_than_its_users_is_dead_lettered_not_silently_unjoined():
    from convcg.partitioning import partition_for

    right = partition_for(b"u1", 3)
    wrong = (right + 1) % 3
    consumer = StubConsumer(committed={**starts(right, 0), **starts(wrong, 0)})
    consumer.partition_count = 3
    proc, out = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, wrong, 0, imp_record(1))),
                              Event(Message(TOPICS.impressions, right, 0, imp_record(2)))]))
    asyncio.run(proc.process(closing_batch(right, {TOPICS.impressions: 1}) + closing_batch(wrong, {TOPICS.impressions: 1})))
    dead = out.to(TOPICS.dead_letters)
    assert [(d["reason"], d["partition"], d["offset"]) for d in dead] == [("wrong_partition", wrong, 0)]
    assert f"belongs on partition {right} of 3" in dead[0]["detail"]
    assert [l["impression_id"] for l in out.to(TOPICS.labels)] == ["imp2"]  # only the placed one joins
    committed = {tp: off for c in consumer.commits for tp, off in c.items()}
    assert committed[TP(TOPICS.impressions, wrong)] == 2  # the rejected record is not held back


def test_the_state_written_restores_from_its_bytes_even_before_the_watermark_moved():
    """A partition that has seen records but no watermark yet (-inf) wrote its watermark as
    JSON null (JSON has no infinity), and restoring null crashed the worker on every restart
    of that partition. Nothing non-finite is written now, and a null already on a changelog
    restores as -inf."""
    import math

    from streams.label_join.state import restore_entries

    consumer = StubConsumer(committed=starts(1, 0))
    proc, out = processor(consumer)
    asyncio.run(proc.process([Event(Message(TOPICS.impressions, 1, 0, imp_record(0)))]))
    assert proc.joiners[1].watermark == -math.inf
    written = {key: value for topic, value, key, _ in out.sent if topic == "jp-changelog"}
    assert orjson.dumps(WATERMARK_KEY % 1) not in written  # nothing to record yet, and no null
    assert restore_entries(1, written) == ([], -math.inf)
    asyncio.run(proc.process(closing_batch(1, {TOPICS.impressions: 1})))  # the watermark moves: written
    written = {key: value for topic, value, key, _ in out.sent if topic == "jp-changelog"}
    assert restore_entries(1, written)[1] == proc.joiners[1].watermark > -math.inf
    legacy = {orjson.dumps(WATERMARK_KEY % 1): b'{"p":1,"wm":null}'}  # as earlier versions wrote it
    assert restore_entries(1, legacy) == ([], -math.inf)

