"""The one commit order (`streams.kafka.checkpoint`), tested once and directly: outputs
acknowledged before the state that records them is written, the state acknowledged before the
safe offsets are asked for and committed, and nothing after a step that failed. The producer
here is a recording fake of the workers' own producer interface (``send`` / ``flush``), not
of Kafka; the broker tests of both workers (tests/streams/label_join/test_label_join_worker.py,
tests/streams/aggregates/test_aggregates_worker.py) show the order delivering through restarts."""

from __future__ import annotations

import asyncio

import pytest

from streams.kafka.checkpoint import Checkpoint, PendingCommits
from streams.kafka.output import DeliveryFailed


class RecordingProducer:
    """Queues sends; a flush acknowledges everything queued (or fails, when told to)."""

    def __init__(self, fail_at_flush: int | None = None) -> None:
        self.queued: list[str] = []
        self.acked: list[str] = []
        self.flushes = 0
        self.fail_at_flush = fail_at_flush

    def send(self, topic: str, value: bytes | None, key: bytes | None = None, partition: int | None = None) -> None:
        self.queued.append(topic)

    async def flush(self) -> None:
        self.flushes += 1
        if self.flushes == self.fail_at_flush:
            raise DeliveryFailed("broker said no")
        self.acked += self.queued
        self.queued = []


def run_checkpoint(producer: RecordingProducer, offsets: dict, log: list, async_state: bool = False) -> dict:
    def write_state() -> None:
        log.append(("state", list(producer.acked), list(producer.queued)))
        producer.send("changelog", b"state")

    async def write_state_async() -> None:
        await asyncio.sleep(0)
        write_state()

    def safe_offsets() -> dict:
        log.append(("offsets", list(producer.acked), list(producer.queued)))
        return offsets

    async def commit(safe: dict) -> None:
        log.append(("commit", dict(safe)))

    producer.send("labels", b"label")  # an output of the batch, queued before the checkpoint
    return asyncio.run(Checkpoint(producer).commit(write_state_async if async_state else write_state,
                                                   safe_offsets, commit))


@pytest.mark.parametrize("async_state", [False, True])
def test_outputs_then_state_then_offsets(async_state):
    producer, log = RecordingProducer(), []
    committed = run_checkpoint(producer, {("events", 0): 7}, log, async_state)
    assert log == [
        ("state", ["labels"], []),  # 1 the output is acknowledged before 2 the state is written
        ("offsets", ["labels", "changelog"], []),  # 3 the state is acknowledged before 4 the offsets
        ("commit", {("events", 0): 7}),  # 5 committed
    ]
    assert committed == {("events", 0): 7} and producer.flushes == 2


def test_no_safe_offsets_no_commit():
    producer, log = RecordingProducer(), []
    assert run_checkpoint(producer, {}, log) == {}
    assert [step[0] for step in log] == ["state", "offsets"]
    assert producer.acked == ["labels", "changelog"]


@pytest.mark.parametrize("failing_flush, steps_done", [(1, []), (2, ["state"])])
def test_a_failed_flush_stops_before_the_next_step(failing_flush, steps_done):
    """The outputs not acknowledged: no state written; the state not acknowledged: no offsets
    asked for and nothing committed (the worker restarts from its last commit)."""
    producer, log = RecordingProducer(fail_at_flush=failing_flush), []
    with pytest.raises(DeliveryFailed):
        run_checkpoint(producer, {("events", 0): 7}, log)
    assert [step[0] for step in log] == steps_done


def test_pending_commits_are_handed_out_at_most_every_interval():
    pending = PendingCommits(interval_s=0.0)
    assert pending.take_due() == {}  # nothing pending
    pending.add({"a": 1})
    pending.add({"a": 2, "b": 5})  # newer offsets replace older ones
    assert pending.take_due() == {"a": 2, "b": 5}
    pending.interval_s = 3600.0
    pending.add({"a": 3})
    assert pending.take_due() == {}  # within the interval: held
    pending.interval_s = 0.0
    pending.forget({"a"})  # revoked: never committed
    assert pending.take_due() == {}
    pending.add({"b": 9})
    assert pending.take_due() == {"b": 9}
