"""`OutputProducer` against the real broker: what it sends is there after `flush`, on the partition
asked for; a message the broker cannot take makes `flush` raise (delivery reports come only for
failures, so this is the path that must not go quiet)."""

from __future__ import annotations

import asyncio

import pytest

from convcg.kafka.io import read_topic
from streams.kafka.output import DeliveryFailed, OutputProducer


def test_sent_messages_are_on_the_broker_after_flush(broker, topics):
    out = OutputProducer(broker.bootstrap)
    for i in range(300):
        out.send(topics.labels, b'{"n": %d}' % i, b"u%d" % i, i % 3)
    asyncio.run(out.flush())
    got = read_topic(broker.bootstrap, topics.labels, min_count=300, timeout=30, idle=0.5)
    assert sorted(r["n"] for r in got) == list(range(300))
    assert out.sent == 300


def test_a_failed_delivery_makes_flush_raise(broker, topics):
    out = OutputProducer(broker.bootstrap, **{"message.timeout.ms": 5000})
    out.send(topics.labels, b'{"n": 1}', b"u1", 0)
    out.send(topics.labels, b'{"n": 2}', b"u2", 97)  # no such partition: the broker cannot take it
    with pytest.raises(DeliveryFailed, match="deliveries failed"):
        out.flush_blocking(timeout=30)
