"""The Faust consumer port against the real broker: its broker lookups, and the Faust internals it relies on."""

import asyncio

import pytest
from faust.types import TP

from streams.label_join.faust.consumer_port import FaustConsumerPort

pytestmark = pytest.mark.broker


def test_committed_offsets_on_the_broker_tell_a_commit_from_none(broker, topics):
    from confluent_kafka import Consumer, TopicPartition

    group = f"{topics.prefix}group"
    committer = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(topics.impressions, 1, 42)], asynchronous=False)
    finally:
        committer.close()
    port = FaustConsumerPort(app=None, bootstrap=broker.bootstrap, group_id=group)
    done, never = TP(topics.impressions, 1), TP(topics.impressions, 2)
    got = asyncio.run(port.committed_on_broker([done, never]))
    assert got == {done: 42, never: None}


def _produce(bootstrap: str, topic: str, partition: int, n: int) -> None:
    from confluent_kafka import Producer

    p = Producer({"bootstrap.servers": bootstrap})
    for i in range(n):
        p.produce(topic, key=b"k", value=b"v%d" % i, partition=partition)
    assert p.flush(30) == 0


def _commit_on_broker(bootstrap: str, group: str, topic: str, partition: int, offset: int) -> None:
    from confluent_kafka import Consumer, TopicPartition

    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        committer.commit(offsets=[TopicPartition(topic, partition, offset)], asynchronous=False)
    finally:
        committer.close()


def test_the_faust_internals_the_port_relies_on_still_exist_and_behave(broker, topics, tmp_path):
    """faust-streaming 0.15 has no public getter of a partition's committed offset and no public
    commit of explicit offsets, so `FaustConsumerPort` uses ``Consumer._committed_offset`` and
    ``Consumer._commit_offsets`` (see its docstring). A Faust upgrade that removes or changes
    either fails here, on a real Faust consumer in a real group."""
    import faust

    group, topic = f"{topics.prefix}faust", topics.impressions
    _produce(broker.bootstrap, topic, 1, 6)
    _commit_on_broker(broker.bootstrap, group, topic, 1, 3)
    tp = TP(topic, 1)

    async def scenario() -> None:
        app = faust.App(group, broker=f"kafka://{broker.bootstrap}", store="memory://", datadir=str(tmp_path),
                        autodiscover=False, web_enabled=False, consumer_auto_offset_reset="earliest",
                        topic_partitions=3)
        source = app.topic(topic, key_serializer="raw", value_serializer="raw", acks=False)
        read: list[tuple[int, int]] = []

        @app.agent(source)
        async def consume(stream):
            async for event in stream.events():
                read.append((event.message.partition, event.message.offset))

        port = FaustConsumerPort(app, broker.bootstrap, group)
        await app.start()
        try:
            deadline = asyncio.get_running_loop().time() + 60
            while (1, 5) not in read:
                assert asyncio.get_running_loop().time() < deadline, f"Faust read only {read}"
                await asyncio.sleep(0.1)
            assert min(o for p, o in read if p == 1) == 3  # started at the committed offset...
            assert port.committed(tp) == 3  # ...which the port reads from Faust's consumer
            # Faust's public commit commits only offsets it acked itself: none with acks=False
            assert await app.consumer.commit({tp}) is False
            assert await port.committed_on_broker([tp]) == {tp: 3}
            await port.commit({tp: 6})  # the port's explicit commit reaches the broker...
            assert await port.committed_on_broker([tp]) == {tp: 6}
            assert port.committed(tp) == 6  # ...and Faust's consumer knows it
            await port.commit({TP(topic, 7): 1})  # a partition not assigned: skipped, no error
        finally:
            await app.stop()

    asyncio.run(scenario())
