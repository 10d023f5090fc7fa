"""Pure logic of the sink: validate wire messages and shape them into columnar batches.

No I/O here. A message that fails validation raises ``InvalidMessage`` with a reason an
operator can act on; the sink sends it to the dead-letter topic and carries on.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa

from convcg.contract import ENTITIES, LABEL_FIELDS, FeatureUpdate, Label
from convcg.dedupe import SeenWithinHorizon
from convcg.validation import LABEL_FLOAT_FIELDS, LABEL_INT_FIELDS, LABEL_STR_FIELDS, MAX_INT, MAX_STORED_TS
from features.repo.definitions import (
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    JOIN_KEYS,
    stream_feature_schema,
)

TIMESTAMP_TYPE = pa.timestamp("us", tz="UTC")
_ARROW_TYPES = {"int": pa.int64(), "float": pa.float64(), "strings": pa.list_(pa.string()),
                "floats": pa.list_(pa.float64())}


_SCHEMAS: dict[str, tuple[tuple[str, str], ...]] = {e: tuple(stream_feature_schema(e).items()) for e in ENTITIES}
_FEATURE_NAMES: dict[str, frozenset[str]] = {e: frozenset(stream_feature_schema(e)) for e in ENTITIES}


class InvalidMessage(ValueError):
    """A message that cannot be stored; ``str(exc)`` is the reason."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


_LIST_ITEM_TYPE = {"floats": frozenset({float}), "strings": frozenset({str})}


def _check_feature(entity: str, name: str, kind: str, value: Any) -> Any:
    if value is None:
        return None
    value_type = type(value)  # the common, valid cases first: one type check each
    if kind == "int" and value_type is int and -MAX_INT - 1 <= value <= MAX_INT:
        return value
    if kind == "float" and value_type is float and math.isfinite(value):
        return value
    if value_type is list and kind in _LIST_ITEM_TYPE and _LIST_ITEM_TYPE[kind].issuperset(map(type, value)):
        # a list of exact floats / strs, checked in C (JSON decodes to no subclass); floats are
        # finite when their sum is (an inf or nan makes it non-finite; an overflow of the sum
        # alone takes the item-by-item path below)
        if kind == "strings" or math.isfinite(sum(value)):
            return value
    if kind == "int":
        if isinstance(value, bool) or not _is_number(value) or value != int(value):
            raise InvalidMessage(f"{entity} feature {name!r} must be an integer, got {value!r}")
        if not -MAX_INT - 1 <= int(value) <= MAX_INT:
            raise InvalidMessage(f"{entity} feature {name!r} does not fit a 64-bit integer")
        return int(value)
    if kind == "float":
        if not _is_number(value):
            raise InvalidMessage(f"{entity} feature {name!r} must be a finite number, got {value!r}")
        return float(value)
    if kind == "floats":
        if not isinstance(value, list) or not all(_is_number(x) for x in value):
            raise InvalidMessage(f"{entity} feature {name!r} must be a list of finite numbers")
        return [float(x) for x in value]
    if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
        raise InvalidMessage(f"{entity} feature {name!r} must be a list of strings")
    return value


def parse_feature_update(d: Any) -> FeatureUpdate:
    """Validate one decoded ``FeatureUpdate`` JSON object."""
    if not isinstance(d, dict):
        raise InvalidMessage("feature update must be a JSON object")
    missing = [k for k in ("entity", "entity_id", "event_ts", "ingest_ms", "features") if k not in d]
    if missing:
        raise InvalidMessage(f"feature update misses field(s) {missing}")
    entity, entity_id = d["entity"], d["entity_id"]
    if entity not in ENTITIES:
        raise InvalidMessage(f"unknown entity {entity!r}; expected one of {list(ENTITIES)}")
    if not isinstance(entity_id, str) or not entity_id:
        raise InvalidMessage("entity_id must be a non-empty string")
    if not _is_number(d["event_ts"]) or not 0 <= d["event_ts"] <= MAX_STORED_TS:
        raise InvalidMessage(f"event_ts must be seconds since the epoch up to {MAX_STORED_TS:.0f}, "
                             f"got {d['event_ts']!r}")
    if not _is_number(d["ingest_ms"]) or not -MAX_INT - 1 <= d["ingest_ms"] <= MAX_INT:
        raise InvalidMessage(f"ingest_ms must be milliseconds since the epoch, got {d['ingest_ms']!r}")
    features = d["features"]
    if not isinstance(features, dict):
        raise InvalidMessage("features must be a JSON object")
    names = _FEATURE_NAMES[entity]
    if not names.issuperset(features):
        raise InvalidMessage(f"unknown {entity} feature(s) {sorted(set(features) - names)}")
    checked = {n: _check_feature(entity, n, k, features.get(n)) for n, k in _SCHEMAS[entity]}
    return FeatureUpdate(entity=entity, entity_id=entity_id, event_ts=float(d["event_ts"]),
                         ingest_ms=int(d["ingest_ms"]), features=checked)


def ts_to_datetime(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def latest_per_entity(updates: list[FeatureUpdate]) -> list[FeatureUpdate]:
    """The newest update of each entity (highest event_ts; later message wins a tie)."""
    best: dict[tuple[str, str], FeatureUpdate] = {}
    for u in updates:
        key = (u.entity, u.entity_id)
        cur = best.get(key)
        if cur is None or u.event_ts >= cur.event_ts:
            best[key] = u
    return list(best.values())


def stream_schema(entity: str) -> pa.Schema:
    fields = [pa.field(JOIN_KEYS[entity], pa.string()), pa.field(EVENT_TIMESTAMP, TIMESTAMP_TYPE),
              pa.field(CREATED_TIMESTAMP, TIMESTAMP_TYPE)]
    fields += [pa.field(n, _ARROW_TYPES[k]) for n, k in stream_feature_schema(entity).items()]
    return pa.schema(fields)


def updates_table(entity: str, updates: list[FeatureUpdate], created: datetime) -> pa.Table:
    """Rows of one entity's updates with the fixed schema of its offline/online source."""
    schema = stream_schema(entity)
    cols: dict[str, list] = {JOIN_KEYS[entity]: [u.entity_id for u in updates],
                             EVENT_TIMESTAMP: [ts_to_datetime(u.event_ts) for u in updates],
                             CREATED_TIMESTAMP: [created] * len(updates)}
    for name in stream_feature_schema(entity):
        cols[name] = [u.features.get(name) for u in updates]
    return pa.Table.from_pydict(cols, schema=schema)


def group_by_entity(updates: list[FeatureUpdate]) -> dict[str, list[FeatureUpdate]]:
    out: dict[str, list[FeatureUpdate]] = {}
    for u in updates:
        out.setdefault(u.entity, []).append(u)
    return out


LABEL_SCHEMA = pa.schema(
    [pa.field(k, pa.string()) for k in LABEL_STR_FIELDS]
    + [pa.field(k, pa.float64()) for k in LABEL_FLOAT_FIELDS]
    + [pa.field(k, pa.int64()) for k in LABEL_INT_FIELDS]
    + [pa.field(CREATED_TIMESTAMP, TIMESTAMP_TYPE)])
assert set(LABEL_FIELDS) <= set(LABEL_SCHEMA.names), "LABEL_SCHEMA must cover every Label field"


def new_labels(labels: list[tuple[int, Label]], seen: SeenWithinHorizon) -> tuple[list[tuple[int, Label]], int]:
    """The (partition, label) pairs to write: label_id neither remembered in ``seen`` nor
    repeated earlier in this batch, and not older than its partition's dedupe horizon; and how
    many were refused as too old. ``seen`` is not changed: the caller adds the pairs once they
    are written, so a failed write retried finds them new again."""
    out, batch_ids, too_old = [], set(), 0
    batch_newest: dict[int, float] = {}  # per partition, of the labels taken so far in this batch
    for partition, lab in labels:
        if lab.label_id in seen or lab.label_id in batch_ids:
            continue
        ts = lab.label_ts
        if seen.too_old_for(partition, ts) or ts < batch_newest.get(partition, ts) - seen.horizon_s:
            too_old += 1
            continue
        batch_ids.add(lab.label_id)
        batch_newest[partition] = max(ts, batch_newest.get(partition, ts))
        out.append((partition, lab))
    return out, too_old


def labels_table(labels: list[Label], created: datetime) -> pa.Table:
    cols = {k: [getattr(lab, k) for lab in labels] for k in LABEL_FIELDS}
    cols[CREATED_TIMESTAMP] = [created] * len(labels)
    return pa.Table.from_pydict({k: cols[k] for k in LABEL_SCHEMA.names}, schema=LABEL_SCHEMA)
