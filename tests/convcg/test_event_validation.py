"""`parse_event`: the one-pass msgspec decode gives the same event, or the same reason tag, as the
field-by-field checks (`parse_event_fields`) for every record, good or bad."""

from __future__ import annotations

import json
import random

import orjson
import pytest

import convcg.validation as validation
from convcg.contract import Conversion, Engagement, Impression, event_to_dict
from convcg.validation import InvalidEvent, Watermark, parse_event, parse_event_fields

NOW = 1_700_000_000.0
FUTURE = 86400.0
TYPE_OF = {Impression: "impression", Engagement: "engagement", Conversion: "conversion"}

GOOD = [
    Impression("e1", "imp1", NOW - 10, "u1", "i1", "a1", "home", 3),
    Engagement("e2", "imp1", NOW - 5, "u1", "i1", "click", 1200),
    Conversion("e3", NOW - 1, "u1", "i1", "a1", "checkout", 19.5, "imp1"),
    Conversion("e4", NOW - 1, "u1", "i1", "a1", "add_to_cart", 0.0),
]

#: values a fuzzed field takes: wrong types, empty, null, out of range, unknown enum values
ODD_VALUES = [None, "", "x", "home", "click", "checkout", 0, -1, 1, 2**63, 2**64, 2**70, 1.5, -0.0, 0.0,
              True, False, [], {}, ["a"], NOW, NOW + 2 * FUTURE, 1e300, "impression"]


def outcome(fn, event_type: str, raw: bytes):
    try:
        return fn(event_type, raw, NOW, FUTURE)
    except InvalidEvent as exc:
        return ("rejected", exc.reason)


def mutations(rng: random.Random, body: dict) -> list[dict]:
    out = []
    for key in list(body) + ["event_type", "extra", "watermark"]:
        without = dict(body)
        without.pop(key, None)
        out.append(without)
        for value in ODD_VALUES:
            out.append({**body, key: value})
    for _ in range(200):  # several fields wrong at once: the first check that fails names it
        d = dict(body)
        for key in rng.sample(list(body), 2):
            d[key] = rng.choice(ODD_VALUES)
        out.append(d)
    return out


@pytest.mark.parametrize("event", GOOD, ids=lambda e: type(e).__name__)
def test_fast_decode_agrees_with_field_checks_on_fuzzed_records(event, monkeypatch):
    event_type = TYPE_OF[type(event)]
    body = event_to_dict(event)
    rng = random.Random(7)
    raws = [json.dumps(d).encode() for d in mutations(rng, body)]  # stdlib json: integers beyond 64 bits too
    raws += [b"{", b"[]", b"null", b'"x"', b"1", b'{"watermark": 5}', b'{"watermark": "soon"}',
             orjson.dumps(body) + b" x", orjson.dumps(body).replace(b'"u1"', b'"u\\u0031"'),
             b'{"event_type": "' + event_type.encode() + b'", ' + orjson.dumps(body)[1:]]
    accepted = rejected = 0
    for raw in raws:
        got, want = outcome(parse_event, event_type, raw), outcome(parse_event_fields, event_type, raw)
        assert got == want, raw
        assert type(got) is type(want)
        if isinstance(got, tuple):
            rejected += 1
        else:
            accepted += 1
    assert accepted > 20 and rejected > 100  # both sides of the check were exercised

    # and a good record is decoded in the one pass: the field-by-field checks never run
    def must_not_run(*args):
        raise AssertionError("the field-by-field checks ran for a good record")

    monkeypatch.setattr(validation, "parse_event_fields", must_not_run)
    assert parse_event(event_type, orjson.dumps(body), NOW, FUTURE) == event


@pytest.mark.parametrize("raw,event_type,reason", [
    (b'{"event_id": "x"}', "impression", "missing_field"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "surface": "teleport"}), "impression", "unknown_surface"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "position": -1}), "impression", "invalid_value"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "user_id": 12345}), "impression", "wrong_type"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "user_id": None}), "impression", "missing_field"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "ts": NOW + 2 * FUTURE}), "impression", "timestamp_in_future"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "ts": -5}), "impression", "timestamp_out_of_range"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "event_type": "conversion"}), "impression", "event_type_mismatch"),
    (orjson.dumps({**event_to_dict(GOOD[0]), "event_type": "purchase"}), "impression", "unknown_event_type"),
    (orjson.dumps({**event_to_dict(GOOD[1]), "type": "teleport"}), "engagement", "unknown_engagement_type"),
    (orjson.dumps({**event_to_dict(GOOD[2]), "type": "teleport"}), "conversion", "unknown_conversion_type"),
    (orjson.dumps({**event_to_dict(GOOD[2]), "impression_id": ""}), "conversion", "wrong_type"),
    (b"{not json", "impression", "malformed_json"),
    (b"", "impression", "empty_record"),
    (b"[1, 2, 3]", "engagement", "not_an_object"),
])
def test_reason_tags(raw, event_type, reason):
    with pytest.raises(InvalidEvent) as exc:
        parse_event(event_type, raw, NOW, FUTURE)
    assert exc.value.reason == reason


def test_watermark_and_declared_type_are_accepted():
    assert parse_event("engagement", b'{"watermark": 12.5}', NOW, FUTURE) == Watermark(12.5)
    body = {**event_to_dict(GOOD[0]), "event_type": "impression"}
    assert parse_event("impression", orjson.dumps(body), NOW, FUTURE) == GOOD[0]


@pytest.mark.parametrize("ts, reason", [(1e18, "watermark_in_future"), (NOW + FUTURE + 1, "watermark_in_future"),
                                        (0, "watermark_out_of_range"), (-5, "watermark_out_of_range"),
                                        (1e309, "malformed_json")])
def test_a_producer_watermark_is_bounded_as_an_event(ts, reason):
    """{"watermark": 1e18} once moved its partition's join watermark there for good."""
    raw = b'{"watermark": 1e309}' if ts == 1e309 else orjson.dumps({"watermark": ts})
    for parse in (parse_event, parse_event_fields):
        with pytest.raises(InvalidEvent) as exc:
            parse("impression", raw, NOW, FUTURE)
        assert exc.value.reason == reason
    assert parse_event("impression", orjson.dumps({"watermark": NOW + FUTURE}), NOW, FUTURE) == Watermark(NOW + FUTURE)


def test_only_a_trusted_close_may_lie_ahead_of_the_clock():
    far = orjson.dumps({"watermark": NOW + 40 * 86400})
    assert parse_event("conversion", far, NOW, FUTURE, trusted_close=True) == Watermark(NOW + 40 * 86400)
    with pytest.raises(InvalidEvent) as exc:  # never infinite or before the epoch, trusted or not
        parse_event("conversion", b'{"watermark": -1}', NOW, FUTURE, trusted_close=True)
    assert exc.value.reason == "watermark_out_of_range"
    event = {**event_to_dict(GOOD[0]), "ts": NOW + 2 * FUTURE}  # the trust is for watermarks only
    with pytest.raises(InvalidEvent):
        parse_event("impression", orjson.dumps(event), NOW, FUTURE, trusted_close=True)
    assert validation.has_trusted_close_header([(validation.TRUSTED_CLOSE_HEADER, b"1")])
    assert validation.has_trusted_close_header({validation.TRUSTED_CLOSE_HEADER.encode(): b"1"})
    assert not validation.has_trusted_close_header([(validation.TRUSTED_CLOSE_HEADER, b"0")])
    assert not validation.has_trusted_close_header(None)


def test_the_default_clock_skew_is_minutes_not_a_day():
    from streams.settings import StreamSettings

    assert 0 < StreamSettings().max_future_s <= 900
