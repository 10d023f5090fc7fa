"""Validation at the edge, part of the contract: raw Kafka bytes -> a typed event or label, or
the reason it is rejected.

Every component that reads an event or label topic parses with these functions. Rejected input
never crashes a reader: it goes to the dead-letter topic with the original bytes and the reason
(see `dead_letter`). A record ``{"watermark": <ts>}`` on an event topic is a producer watermark
(a promise that no earlier event follows on that partition).

Clock bounds. An event or a producer watermark must be stamped after the Unix epoch and at
most ``max_future_s`` (the allowed clock skew, `DEFAULT_MAX_CLOCK_SKEW_S`: minutes, not a day)
ahead of the reader's clock: one record stamped hours ahead would otherwise move its
partition's watermark there and decide every pending impression at once. The one exception is
a *trusted close*: a watermark record carrying the header `TRUSTED_CLOSE_HEADER` (only
`convcg replay --close` sets it), which may lie past every label window, and which a reader
honours only when its settings say so (``trusted_close``).
"""

from __future__ import annotations

import base64
import math
from dataclasses import dataclass
from typing import Any

import msgspec
import orjson

from convcg.contract import (
    CONVERSION_TYPES,
    ENGAGEMENT_TYPES,
    EVENT_CLASSES,
    LABEL_KINDS,
    SURFACES,
    Conversion,
    DeadLetter,
    Engagement,
    Event,
    Impression,
    Label,
)

#: event time outside (MIN_TS, now + max_future_s] is rejected (MovieLens-100k is from 1997)
MIN_TS = 0.0
#: how far ahead of the reader's clock an event or a producer watermark may be stamped: the
#: clock skew allowed between producers and readers (one setting: the edge validation refuses
#: beyond it, and the join clamps a source's newest time to it)
DEFAULT_MAX_CLOCK_SKEW_S = 300.0
DEFAULT_MAX_FUTURE_S = DEFAULT_MAX_CLOCK_SKEW_S
#: the record header that marks a producer watermark as a trusted close (value b"1"): set only
#: by `convcg replay --close` (`streams.replay.watermarks`); a watermark carrying it is exempt
#: from the clock bound where the reader allows it
TRUSTED_CLOSE_HEADER = "convcg-trusted-close"
#: integer fields (position, dwell_ms) must fit a signed 64-bit integer (Kafka, Arrow, numpy)
MAX_INT = 2**63 - 1


class InvalidEvent(ValueError):
    """An input record that cannot become an event; ``reason`` is a short machine tag."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class Watermark:
    ts: float


def has_trusted_close_header(headers: Any) -> bool:
    """Whether a record's headers (aiokafka / Faust: a sequence of (key, value) pairs or a
    mapping; librdkafka: a list of pairs or None) mark it as a trusted close."""
    if not headers:
        return False
    pairs = headers.items() if hasattr(headers, "items") else headers
    for key, value in pairs:
        if isinstance(key, bytes):
            key = key.decode("utf-8", "replace")
        if key == TRUSTED_CLOSE_HEADER and value in (b"1", "1"):
            return True
    return False


def _str(d: dict, name: str) -> str:
    v = d.get(name)
    if v is None:
        raise InvalidEvent("missing_field", name)
    if not isinstance(v, str) or not v:
        raise InvalidEvent("wrong_type", f"{name} must be a non-empty string")
    return v


def _num(d: dict, name: str) -> float:
    v = d.get(name)
    if v is None:
        raise InvalidEvent("missing_field", name)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidEvent("wrong_type", f"{name} must be a finite number")
    return float(v)


def _int(d: dict, name: str) -> int:
    v = d.get(name)
    if v is None:
        raise InvalidEvent("missing_field", name)
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidEvent("wrong_type", f"{name} must be an integer")
    if not -MAX_INT - 1 <= v <= MAX_INT:
        raise InvalidEvent("invalid_value", f"{name} does not fit a 64-bit integer")
    return v


def _ts(d: dict, now: float, max_future_s: float) -> float:
    ts = _num(d, "ts")
    if ts <= MIN_TS:
        raise InvalidEvent("timestamp_out_of_range", f"ts={ts} is not after the Unix epoch (seconds expected)")
    if ts > now + max_future_s:
        raise InvalidEvent("timestamp_in_future", f"ts={ts} is more than {max_future_s:.0f}s ahead of now")
    return ts


def _watermark(d: dict, now: float, max_future_s: float, trusted_close: bool) -> Watermark:
    """A producer watermark under the bounds of an event's time (finite, after the epoch, at
    most ``max_future_s`` ahead of now) unless it is a trusted close."""
    ts = _num(d, "watermark")
    if ts <= MIN_TS:
        raise InvalidEvent("watermark_out_of_range", f"watermark={ts} is not after the Unix epoch (seconds expected)")
    if ts > now + max_future_s and not trusted_close:
        raise InvalidEvent("watermark_in_future", f"watermark={ts} is more than {max_future_s:.0f}s ahead of now "
                           f"(only a trusted close, header {TRUSTED_CLOSE_HEADER}, may be)")
    return Watermark(ts)


_DECODERS: dict[str, msgspec.json.Decoder] = {t: msgspec.json.Decoder(cls) for t, cls in EVENT_CLASSES.items()}


def parse_event(event_type: str, raw: bytes | None, now: float, max_future_s: float,
                trusted_close: bool = False) -> Event | Watermark:
    """Parse and validate one record from the topic of ``event_type``.

    A well-formed event is decoded and checked in one pass by msgspec against the contract's
    Struct (its field types carry the checks); only the distance to the future is checked after.
    Anything msgspec does not accept (a bad record, a producer watermark, an integer beyond
    int64) is examined field by field by `parse_event_fields`, which names the reason.
    ``trusted_close``: the record is a trusted close (`TRUSTED_CLOSE_HEADER`, allowed by the
    reader): a producer watermark in it may lie beyond the clock bound."""
    if not raw:
        raise InvalidEvent("empty_record")
    decoder = _DECODERS.get(event_type)
    if decoder is not None:
        try:
            event = decoder.decode(raw)
        except (msgspec.DecodeError, RecursionError):  # also msgspec.ValidationError; JSON nested too deep
            pass
        else:
            if event.ts > now + max_future_s:
                raise InvalidEvent("timestamp_in_future",
                                   f"ts={event.ts} is more than {max_future_s:.0f}s ahead of now")
            return event
    return parse_event_fields(event_type, raw, now, max_future_s, trusted_close)


def parse_event_fields(event_type: str, raw: bytes, now: float, max_future_s: float,
                       trusted_close: bool = False) -> Event | Watermark:
    """`parse_event` one check at a time, from the decoded JSON object: the first check that
    fails gives the reason tag. Accepts exactly what `parse_event`'s decoder accepts (and also
    producer watermarks and integers beyond int64), into equal events."""
    try:
        d: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("malformed_json", str(exc)[:200]) from None
    if not isinstance(d, dict):
        raise InvalidEvent("not_an_object", type(d).__name__)
    declared = d.get("event_type")
    if declared is not None and declared != event_type:
        raise InvalidEvent("unknown_event_type" if declared not in ("impression", "engagement", "conversion")
                           else "event_type_mismatch", f"{declared!r} on the {event_type} topic")
    if "watermark" in d and len(d) == 1:
        return _watermark(d, now, max_future_s, trusted_close)
    if event_type == "impression":
        surface = _str(d, "surface")
        if surface not in SURFACES:
            raise InvalidEvent("unknown_surface", surface)
        position = _int(d, "position")
        if position < 0:
            raise InvalidEvent("invalid_value", "position must be >= 0")
        return Impression(_str(d, "event_id"), _str(d, "impression_id"), _ts(d, now, max_future_s),
                          _str(d, "user_id"), _str(d, "item_id"), _str(d, "advertiser_id"), surface, position)
    if event_type == "engagement":
        etype = _str(d, "type")
        if etype not in ENGAGEMENT_TYPES:
            raise InvalidEvent("unknown_engagement_type", etype)
        dwell = _int(d, "dwell_ms")
        if dwell < 0:
            raise InvalidEvent("invalid_value", "dwell_ms must be >= 0")
        return Engagement(_str(d, "event_id"), _str(d, "impression_id"), _ts(d, now, max_future_s),
                          _str(d, "user_id"), _str(d, "item_id"), etype, dwell)
    if event_type == "conversion":
        ctype = _str(d, "type")
        if ctype not in CONVERSION_TYPES:
            raise InvalidEvent("unknown_conversion_type", ctype)
        value = _num(d, "value")
        if value < 0:
            raise InvalidEvent("invalid_value", "value must be >= 0")
        imp_id = d.get("impression_id")
        if imp_id is not None and (not isinstance(imp_id, str) or not imp_id):
            raise InvalidEvent("wrong_type", "impression_id must be a non-empty string when present")
        return Conversion(_str(d, "event_id"), _ts(d, now, max_future_s), _str(d, "user_id"),
                          _str(d, "item_id"), _str(d, "advertiser_id"), ctype, value, imp_id)
    raise InvalidEvent("unknown_event_type", event_type)


def dead_letter(component: str, topic: str, partition: int, offset: int | None, raw: bytes | None,
                reason: str, detail: str, now: float) -> bytes:
    """The dead-letter record (``DeadLetter``): who rejected what, where it came from, why, and
    the original bytes (base64)."""
    # orjson writes a dataclass's fields in order, the bytes dumps(to_dict()) gives, without
    # dataclasses.asdict: 15.8 -> 2.3 µs a call here, which was ~30% of the label join's own
    # py-spy samples under bench.system.pipeline_freshness's load (its engagements mostly dropped)
    return orjson.dumps(DeadLetter(component, topic, partition, -1 if offset is None else offset, reason,
                                   detail, base64.b64encode(raw or b"").decode(), now))


def decode_dead_letter(raw: bytes) -> DeadLetter:
    """Read one dead-letter record back (``convcg deadletters``, tests)."""
    d = orjson.loads(raw)
    return DeadLetter(**{k: d[k] for k in DeadLetter.__dataclass_fields__})


# --- labels ---------------------------------------------------------------------------------

LABEL_STR_FIELDS = ("label_id", "impression_id", "user_id", "item_id", "advertiser_id", "surface", "kind")
LABEL_FLOAT_FIELDS = ("impression_ts", "label_ts", "conversion_value", "engagement_weight")
LABEL_INT_FIELDS = ("conversion", "engagement", "position")
LABEL_REQUIRED = ("label_id", "impression_id", "user_id", "item_id", "advertiser_id", "surface",
                  "impression_ts", "label_ts", "kind")
LABEL_TS_FIELDS = ("impression_ts", "label_ts")
#: the latest event time a stored record (label, feature update) may carry: 2100-01-01. Far
#: beyond any clock, well inside what ``datetime``, Arrow's timestamps and Feast's protobuf
#: ``Timestamp`` hold (year 9999); a label stamped later would also move its partition's dedupe
#: horizon past every label that follows
MAX_STORED_TS = 4_102_444_800.0


class InvalidLabel(ValueError):
    """A label message that cannot be used; ``str(exc)`` is the reason."""


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def parse_label(d: Any) -> Label:
    """Validate one decoded ``Label`` JSON object."""
    if not isinstance(d, dict):
        raise InvalidLabel("label must be a JSON object")
    missing = [k for k in LABEL_REQUIRED if k not in d]
    if missing:
        raise InvalidLabel(f"label misses field(s) {missing}")
    for k in LABEL_STR_FIELDS:
        if k in d and not isinstance(d[k], str):
            raise InvalidLabel(f"label field {k!r} must be a string")
    for k in LABEL_FLOAT_FIELDS:
        if k in d and not _finite_number(d[k]):
            raise InvalidLabel(f"label field {k!r} must be a finite number")
    for k in LABEL_INT_FIELDS:
        if k in d and (isinstance(d[k], bool) or not isinstance(d[k], int)):
            raise InvalidLabel(f"label field {k!r} must be an integer")
        if k in d and not -MAX_INT - 1 <= d[k] <= MAX_INT:
            raise InvalidLabel(f"label field {k!r} does not fit a 64-bit integer")
    for k in LABEL_TS_FIELDS:
        if not 0 <= d[k] <= MAX_STORED_TS:
            raise InvalidLabel(f"label field {k!r} must be seconds since the epoch up to {MAX_STORED_TS:.0f}, "
                               f"got {d[k]!r}")
    if not d["label_id"]:
        raise InvalidLabel("label_id must not be empty")
    if d["kind"] not in LABEL_KINDS:
        raise InvalidLabel(f"label kind {d['kind']!r} is not one of {list(LABEL_KINDS)}")
    label = Label.from_dict(d)
    label.impression_ts, label.label_ts = float(label.impression_ts), float(label.label_ts)
    return label


def decode_label(raw: bytes | None) -> Label:
    """Decode and validate one label message from the labels topic."""
    if not raw:
        raise InvalidLabel("empty label record")
    try:
        d = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidLabel(f"label is not JSON: {str(exc)[:200]}") from None
    return parse_label(d)
