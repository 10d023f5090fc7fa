"""Reading a partition's compacted contents up to a fence, from the real broker."""

import pytest

pytestmark = pytest.mark.broker


def test_the_state_read_sees_every_record_of_the_newest_batch(broker, topics):
    """The join state is restored from the changelog partition as it is on the broker. Written
    as the worker writes it (librdkafka, one flush per batch), every record must come back,
    the newest batch included (reading to Tansu's end offset returned 1 of its 12), and an
    earlier read's fence never shows up as state."""
    import orjson

    from streams.fenced_read import read_partition_through_fence
    from streams.output import OutputProducer

    out, topic = OutputProducer(broker.bootstrap), topics.labels
    written: dict[bytes, bytes | None] = {}
    for batch in range(3):
        for i in range(12):
            key, value = orjson.dumps(f"imp{i}"), orjson.dumps({"batch": batch, "i": i})
            if batch == 2 and i == 0:
                value = None  # a tombstone in the newest batch
            out.send(topic, value, key, 2)
            written[key] = value
        out.flush_blocking()
        assert read_partition_through_fence(broker.bootstrap, topic, 2) == written
