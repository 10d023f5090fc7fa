"""Reading a changelog partition's compacted contents up to its end, from the real broker."""

import pytest

pytestmark = pytest.mark.broker


def test_the_state_read_sees_every_record_of_the_newest_batch(broker, topics):
    """The join state is restored from the changelog partition as it is on the broker. Written
    as the worker writes it (librdkafka, one flush per batch), every record must come back,
    the newest batch and its tombstone included."""
    import orjson

    from streams.kafka.changelog_read import read_partition
    from streams.kafka.output import OutputProducer

    out, topic = OutputProducer(broker.bootstrap), topics.labels
    assert read_partition(broker.bootstrap, topic, 2) == {}
    written: dict[bytes, bytes | None] = {}
    for batch in range(3):
        for i in range(12):
            key, value = orjson.dumps(f"imp{i}"), orjson.dumps({"batch": batch, "i": i})
            if batch == 2 and i == 0:
                value = None  # a tombstone in the newest batch
            out.send(topic, value, key, 2)
            written[key] = value
        out.flush_blocking()
        assert read_partition(broker.bootstrap, topic, 2) == written


def test_a_compacted_changelog_reads_to_its_end_with_the_last_value_of_every_key(broker, topics):
    """The aggregates' changelog is created compacted on the broker; overwritten keys read back
    as their last value, and a tombstone as the newest record ends the read as a deletion."""
    import orjson

    from convcg.kafka.broker import topic_configs
    from streams.kafka.changelog_read import read_partition
    from streams.kafka.output import OutputProducer

    topic = topics.aggregates_changelog("user")
    assert topic_configs(broker.bootstrap, topic)["cleanup.policy"] == "compact"
    out = OutputProducer(broker.bootstrap)
    for round_ in range(5):
        for i in range(20):
            out.send(topic, orjson.dumps({"r": round_}), orjson.dumps(f"k{i}"), 0)
        out.flush_blocking()
    out.send(topic, None, orjson.dumps("k0"), 0)
    out.flush_blocking()
    got = read_partition(broker.bootstrap, topic, 0)
    assert got[orjson.dumps("k0")] is None
    assert {k: orjson.loads(v) for k, v in got.items() if v is not None} == {
        orjson.dumps(f"k{i}"): {"r": 4} for i in range(1, 20)}
