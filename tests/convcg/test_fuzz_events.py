"""The event parser and validation (convcg/validation.py) fuzzed with hypothesis, bounded.

Inputs: random bytes; valid events with one field mutated, dropped or retyped; huge numbers;
NaN and infinities; deep JSON; very long strings; invalid UTF-8. Every record must either parse
to a valid event (one that survives its own wire round trip) or be rejected with a reason that
makes a decodable dead-letter record holding the original bytes; nothing else may escape.
Examples are derandomized, so a run is reproducible and its figures are the README's.
"""

from __future__ import annotations

import base64
import json
import math

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convcg.contract import (
    CONVERSION_TYPES,
    ENGAGEMENT_TYPES,
    EVENT_CLASSES,
    SURFACES,
    event_to_dict,
)
from convcg.validation import MAX_INT, InvalidEvent, Watermark, dead_letter, parse_event
from tests.support.fuzz_tally import FuzzTally

NOW = 1_700_000_000.0
MAX_FUTURE_S = 86_400.0
EXAMPLES = 400  # per target; the whole file runs in a few seconds
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
EVENT_TYPES = ("impression", "engagement", "conversion")
REASONS = {"empty_record", "malformed_json", "not_an_object", "unknown_event_type", "event_type_mismatch",
           "missing_field", "wrong_type", "unknown_surface", "invalid_value", "unknown_engagement_type",
           "unknown_conversion_type", "timestamp_out_of_range", "timestamp_in_future", "watermark_out_of_range",
           "watermark_in_future"}

ids = st.text(min_size=1, max_size=24)
timestamps = st.floats(min_value=1.0, max_value=NOW + MAX_FUTURE_S, allow_nan=False)
non_negative_ints = st.integers(min_value=0, max_value=MAX_INT)


def valid_event(event_type: str) -> st.SearchStrategy[dict]:
    common = {"event_id": ids, "ts": timestamps, "user_id": ids, "item_id": ids}
    if event_type == "impression":
        fields = {**common, "impression_id": ids, "advertiser_id": ids, "surface": st.sampled_from(SURFACES),
                  "position": non_negative_ints}
    elif event_type == "engagement":
        fields = {**common, "impression_id": ids, "type": st.sampled_from(ENGAGEMENT_TYPES),
                  "dwell_ms": non_negative_ints}
    else:
        fields = {**common, "advertiser_id": ids, "type": st.sampled_from(CONVERSION_TYPES),
                  "value": st.floats(min_value=0, max_value=1e12, allow_nan=False)}
    return st.fixed_dictionaries(fields, optional={"event_type": st.just(event_type)})


typed_events = st.sampled_from(EVENT_TYPES).flatmap(lambda t: st.tuples(st.just(t), valid_event(t)))
json_scalars = st.none() | st.booleans() | st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1) \
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=40)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def wire(value) -> bytes:
    """JSON bytes as another producer might send them (the stdlib encoder: any integer size)."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False).encode()


def check(event_type: str, raw: bytes | None, tally: FuzzTally) -> None:
    """One record through the parser: a valid event or a dead-letter reason, nothing else."""
    try:
        parsed = parse_event(event_type, raw, NOW, MAX_FUTURE_S)
    except InvalidEvent as exc:
        assert exc.reason in REASONS, exc.reason
        record = orjson.loads(dead_letter("streams-worker", f"{event_type}s", 0, 7, raw, exc.reason, exc.detail, NOW))
        assert record["reason"] == exc.reason and base64.b64decode(record["original_b64"]) == (raw or b"")
        tally.add(exc.reason)
        return
    if isinstance(parsed, Watermark):  # bounded as an event's time (no trusted close here)
        assert math.isfinite(parsed.ts) and 0 < parsed.ts <= NOW + MAX_FUTURE_S
        tally.add("watermark")
        return
    assert isinstance(parsed, EVENT_CLASSES[event_type])
    assert 0 < parsed.ts <= NOW + MAX_FUTURE_S
    wire = orjson.dumps(event_to_dict(parsed))  # what the worker forwards must encode and re-parse
    assert parse_event(event_type, wire, NOW, MAX_FUTURE_S) == parsed
    tally.add("valid")


def run(tally: FuzzTally, strategy, minimum_rejected: int = 1) -> None:
    @FUZZ
    @given(strategy)
    def fuzz(case):
        event_type, raw = case
        check(event_type, raw, tally)

    fuzz()
    print(tally.line())
    assert tally.inputs >= EXAMPLES // 2
    assert tally.count(lambda o: o != "valid" and o != "watermark") >= minimum_rejected


def test_random_bytes():
    run(FuzzTally("events: random bytes"), st.tuples(st.sampled_from(EVENT_TYPES), st.binary(max_size=300)))


def test_valid_events_parse_to_themselves():
    tally = FuzzTally("events: valid")

    @FUZZ
    @given(typed_events)
    def fuzz(case):
        event_type, d = case
        check(event_type, wire(d), tally)
        assert tally.outcomes["valid"] == tally.inputs  # nothing valid is dead-lettered

    fuzz()
    print(tally.line())
    assert tally.inputs >= EXAMPLES // 2


@st.composite
def one_field_changed(draw):
    event_type, d = draw(typed_events)
    name = draw(st.sampled_from(sorted(d)))
    how = draw(st.sampled_from(["drop", "retype", "long_string", "huge_number", "deep"]))
    if how == "drop":
        del d[name]
    elif how == "retype":
        d[name] = draw(json_values)
    elif how == "long_string":
        d[name] = draw(st.sampled_from(["x", "é", "\u0000", "\U0001F600"])) * draw(st.integers(10_000, 300_000))
    elif how == "huge_number":
        d[name] = draw(st.sampled_from([2**63, -(2**63) - 1, 2**64 - 1, 1e308, -1e308, 5e-324, 10**30]))
    else:
        depth = draw(st.integers(2, 200))
        d[name] = orjson.loads(b"[" * depth + b"1" + b"]" * depth)
    return event_type, wire(d)


def test_valid_events_with_one_field_dropped_retyped_or_mutated():
    run(FuzzTally("events: one field changed"), one_field_changed())


NON_JSON_NUMBERS = [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan", b"inf",
                    b"123456789012345678901234567890", b"-9223372036854775809", b"1e-400"]


@st.composite
def non_json_numbers_and_deep_json(draw):
    event_type, d = draw(typed_events)
    name = draw(st.sampled_from(sorted(d)))
    raw = wire({**d, name: "@@"})
    if draw(st.booleans()):
        replacement = draw(st.sampled_from(NON_JSON_NUMBERS))
    else:  # nesting past the decoder's depth limit, or just under it
        depth = draw(st.sampled_from([1000, 1023, 1024, 1025, 5000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        replacement = opener * depth + b"1" + closer * depth
    return event_type, raw.replace(b'"@@"', replacement, 1)


def test_nan_infinity_huge_numbers_and_deep_json():
    run(FuzzTally("events: NaN/inf/huge/deep"), non_json_numbers_and_deep_json())


@st.composite
def invalid_utf8(draw):
    event_type, d = draw(typed_events)
    name = draw(st.sampled_from([k for k in sorted(d) if isinstance(d[k], str)]))
    bad = draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf",
                                b"\\ud800", b"\\udfff", b"\x80abc"]))
    raw = wire({**d, name: "@@"})
    return event_type, raw.replace(b"@@", b"ok" + bad, 1)


def test_invalid_utf8_and_lone_surrogates():
    tally = FuzzTally("events: invalid UTF-8")
    run(tally, invalid_utf8())
    assert tally.outcomes["valid"] == 0  # no invalid text ever becomes an event


def test_watermarks_and_wrong_shapes():
    shapes = st.sampled_from(EVENT_TYPES + ("click", "")).flatmap(lambda t: st.tuples(st.just(t), st.one_of(
        st.just(None), st.just(b""),
        json_values.map(wire),
        st.dictionaries(st.just("watermark"), json_values, min_size=1).map(wire),
    )))
    run(FuzzTally("events: watermarks / shapes"), shapes)
