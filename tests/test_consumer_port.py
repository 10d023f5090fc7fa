"""The Faust consumer port's broker lookups, against the real broker."""

import asyncio

import pytest
from faust.types import TP

from streams.consumer_port import FaustConsumerPort

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
