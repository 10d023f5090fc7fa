"""Labels and feature updates, as the features sink and the trainer read them, fuzzed with
hypothesis (bounded, derandomized): random bytes; valid messages with one field dropped, retyped
or mutated; huge numbers, NaN/inf, deep JSON, long strings, invalid UTF-8. Every record either
parses to a valid value or becomes a dead letter in the contract's shape with a reason and the
original bytes; nothing else escapes."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import orjson
from hypothesis import given
from hypothesis import strategies as st

from convcg.contract import LABEL_KINDS, Topics
from convcg.validation import InvalidLabel, decode_dead_letter, decode_label
from features.sink.worker import decode_records
from tests.convcg.test_fuzz_events import EXAMPLES, FUZZ, NON_JSON_NUMBERS, json_values, wire
from tests.support.feature_samples import full_update, sample_label
from tests.support.fuzz_tally import FuzzTally

TOPICS = Topics("fuzz-")
SINK_REASONS = {"malformed_json", "invalid_label", "invalid_feature_update"}


@dataclass
class Record:  # the fields of a consumer record the sink reads
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


def valid_label() -> st.SearchStrategy[dict]:
    return st.builds(lambda imp, user, item, ts, kind: sample_label(imp, user, item, "a1", ts, kind).to_dict(),
                     st.text(min_size=1, max_size=12), st.text(min_size=1, max_size=12),
                     st.text(min_size=1, max_size=12), st.floats(1.0, 2e9), st.sampled_from(LABEL_KINDS))


def valid_update() -> st.SearchStrategy[dict]:
    return st.builds(lambda entity, eid, ts, v: full_update(entity, eid, ts, v, ingest_ms=1).to_dict(),
                     st.sampled_from(["user", "item", "advertiser"]), st.text(min_size=1, max_size=12),
                     st.floats(0.0, 2e9), st.integers(0, 10_000))


@st.composite
def mutated(draw, base):
    d = draw(base)
    target = d["features"] if "features" in d and draw(st.booleans()) else d
    name = draw(st.sampled_from(sorted(target)))
    how = draw(st.sampled_from(["drop", "retype", "long_string", "huge_number", "non_json", "deep", "utf8"]))
    if how == "drop":
        del target[name]
    elif how == "retype":
        target[name] = draw(json_values)
    elif how == "long_string":
        target[name] = "x" * draw(st.integers(10_000, 200_000))
    elif how == "huge_number":
        target[name] = draw(st.sampled_from([2**63, -(2**63) - 1, 2**64 - 1, 1e308, -1e308, 10**30]))
    elif how == "deep":
        depth = draw(st.integers(2, 300))
        target[name] = orjson.loads(b"[" * depth + b"1" + b"]" * depth)
    else:
        target[name] = "@@"
        raw = wire(d)
        bad = draw(st.sampled_from(NON_JSON_NUMBERS)) if how == "non_json" else b'"ok\xff"'
        return raw.replace(b'"@@"', bad, 1)
    return wire(d)


messages = st.one_of(st.binary(max_size=300), valid_label().map(wire), valid_update().map(wire),
                     mutated(valid_label()), mutated(valid_update()), json_values.map(wire))


def test_the_sink_decodes_or_dead_letters_every_record():
    tally = FuzzTally("sink: labels + feature updates")

    @FUZZ
    @given(st.sampled_from([TOPICS.labels, TOPICS.feature_updates]), messages)
    def fuzz(topic, raw):
        batch = decode_records([Record(topic, 1, 42, b"k", raw)], TOPICS)
        assert len(batch.updates) + len(batch.labels) + len(batch.dead_letters) == 1
        if batch.dead_letters:
            dl = decode_dead_letter(batch.dead_letters[0])
            assert dl.reason in SINK_REASONS and dl.detail and dl.component == "features-sink"
            assert (dl.topic, dl.partition, dl.offset) == (topic, 1, 42)
            assert base64.b64decode(dl.original_b64) == raw
            tally.add(dl.reason)
        else:
            assert (topic == TOPICS.labels) == bool(batch.labels)
            tally.add("valid")

    fuzz()
    print(tally.line())
    assert tally.inputs >= EXAMPLES // 2 and tally.outcomes["valid"] > 0 and tally.count(SINK_REASONS.__contains__) > 0


def test_the_trainer_decodes_or_rejects_every_label_with_a_reason():
    tally = FuzzTally("trainer: labels")

    @FUZZ
    @given(messages)
    def fuzz(raw):
        try:
            label = decode_label(raw)
        except InvalidLabel as exc:
            assert str(exc)
            tally.add("invalid_label")
            return
        assert label.kind in LABEL_KINDS and label.label_id and isinstance(label.impression_ts, float)
        assert decode_label(orjson.dumps(label.to_dict())) == label
        tally.add("valid")

    fuzz()
    print(tally.line())
    assert tally.outcomes["valid"] > 0 and tally.outcomes["invalid_label"] > 0
