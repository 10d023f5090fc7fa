"""Reading a hole the consumer skipped, straight from the real broker."""

import pytest
from faust.types import TP

from convcg.kafka.io import json_producer
from streams.label_join.faust.hole_read import read_hole

pytestmark = pytest.mark.broker


def test_a_hole_is_read_in_order_with_keys_values_and_timestamps(broker, topics):
    p = json_producer(broker.bootstrap)
    for i in range(10):
        p.send(topics.impressions, key=b"u1", value=f"v{i}".encode(), partition=1, timestamp_ms=1_700_000_000_000 + i)
    p.flush()
    p.close()
    tp = TP(topics.impressions, 1)
    got = read_hole(broker.bootstrap, tp, 3, 7, generation_id=5)
    assert [r.offset for r in got] == [3, 4, 5, 6]
    assert [r.value for r in got] == [b"v3", b"v4", b"v5", b"v6"] and all(r.key == b"u1" for r in got)
    assert got[0].timestamp == pytest.approx(1_700_000_000.003) and got[0].tp == tp and got[0].generation_id == 5
    assert read_hole(broker.bootstrap, tp, 9, 10, None)[0].value == b"v9"


def test_a_hole_from_offset_zero_starts_at_the_log_start(broker, topics):
    p = json_producer(broker.bootstrap)
    for i in range(3):
        p.send(topics.conversions, key=b"u", value=f"c{i}".encode(), partition=0)
    p.flush()
    p.close()
    got = read_hole(broker.bootstrap, TP(topics.conversions, 0), 0, 2, None)
    assert [(r.offset, r.value) for r in got] == [(0, b"c0"), (1, b"c1")]
