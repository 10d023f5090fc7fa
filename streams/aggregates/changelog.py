"""A stage partition's state as changelog records, and the stage restored from them (pure).

Each stage partition has a partition of its stage's compacted changelog topic
(``Topics.aggregates_changelog(stage)``). Its records, keys and values as bytes (values JSON):

- ``b|<entity id>|<bucket>``: one bucket of one entity, ``[impressions, engagements,
  conversions, entity newest ts, position of each source...]``: the bucket's counts and the
  consumer's positions on the stage's sources when it was written, i.e. the bucket holds
  exactly the records below those positions. A tombstone once the bucket left the windows.
- ``m|<entity id>``: what is not a count: a user's engagement sequence ``{"r": [[ts, item,
  dwell_ms, impression id, event id]...]}`` (``[ts, item]`` entries of older changelogs are read too),
  an item's advertiser and parked engagements ``{"a": ..., "k": [...]}``.
- ``s|<uuid>``: the event ids one state flush accepted ``{"n": newest ts, "ids": [[id, ts,
  position], ...]}`` (with the user stage's (impression, item) keys of first engagements); a
  tombstone once the newest ts is behind the dedupe horizon.

A restore reads the partition to its end (`streams.kafka.changelog_read`): its cost follows the state
(entities × buckets in the windows, ids in the dedupe horizon), not the retained event log.
"""

from __future__ import annotations

import math
import uuid

import orjson

from streams.aggregates.sequence import legacy_recent
from streams.aggregates.settings import AggregateSettings
from streams.aggregates.stage import ITEM, USER, StageAggregator
from streams.aggregates.windows import _EntityWindows

BUCKET, META, SEEN = b"b|", b"m|", b"s|"


def bucket_key(entity_id: str, bucket: int) -> bytes:
    return b"b|%s|%d" % (entity_id.encode(), bucket)


def state_records(stage: StageAggregator, positions: list[int]) -> list[tuple[bytes, bytes | None]]:
    """What changed in ``stage`` since the last call, as changelog records (None: tombstone),
    the buckets stamped with ``positions`` (the consumer's next offset on each source)."""
    dumps, out = orjson.dumps, []
    for key, buckets in stage.changed.items():
        st = stage.table.get(key)
        if st is None:
            continue
        for b in buckets:
            row = st.counts.get(b)
            if row is not None:  # else outside every window already
                out.append((bucket_key(key, b), dumps([*row, st.newest, *positions])))
    for key in stage.meta_changed:
        if stage.entity == USER:
            meta = {"r": stage.recent.get(key, [])}
        elif stage.entity == ITEM:
            meta = {"a": stage.item_advertiser.get(key), "k": stage.parked.get(key, [])}
        else:
            continue
        out.append((META + key.encode(), dumps(meta)))
    out.extend((bucket_key(key, b), None) for key, b in stage.expired)
    per_record = stage.settings.seen_ids_per_record
    for i in range(0, len(stage.new_seen), per_record):
        seen_key = SEEN + uuid.uuid4().hex.encode()
        out.append((seen_key, dumps({"n": stage.newest, "ids": stage.new_seen[i:i + per_record]})))
        stage.seen_batches.append((seen_key, stage.newest))
    cutoff = stage.newest - stage.settings.dedupe_horizon_seconds
    batches = stage.seen_batches
    while batches and batches[0][1] < cutoff:
        out.append((batches.popleft()[0], None))
    stage.changed.clear()
    stage.meta_changed.clear()
    stage.expired.clear()
    stage.new_seen = []
    upto = stage.restored_upto
    if upto is not None and all(p >= r for p, r in zip(positions, upto)):
        stage.skip_below.clear()  # no record below a restored bucket's positions can come again
        stage.restored_upto = None
    return out


def restore_stage(entity: str, records: dict[bytes, bytes | None],
                  settings: AggregateSettings | None = None) -> StageAggregator:
    """The stage partition as its changelog records describe it (``records``: the last value
    per key, as `read_partition` returns them)."""
    stage = StageAggregator(entity, settings)
    s, n_sources = stage.settings, stage.n_sources
    widths = stage._widths
    buckets: dict[str, dict[int, list]] = {}
    batches: list[tuple[float, bytes, list]] = []
    for key, value in records.items():
        if value is None or not key:
            continue
        if key.startswith(BUCKET):
            entity_id, bucket = key[2:].decode().rsplit("|", 1)
            buckets.setdefault(entity_id, {})[int(bucket)] = orjson.loads(value)
        elif key.startswith(META):
            meta, entity_id = orjson.loads(value), key[2:].decode()
            if entity == USER:
                stage.recent[entity_id] = legacy_recent(meta["r"])
            elif entity == ITEM:
                if meta.get("a") is not None:
                    stage.item_advertiser[entity_id] = meta["a"]
                if meta.get("k"):
                    stage.parked[entity_id] = meta["k"]
        elif key.startswith(SEEN):
            batch = orjson.loads(value)
            batches.append((batch["n"], key, batch["ids"]))
    upto = [0] * n_sources
    for entity_id, rows in buckets.items():
        newest = max(row[3] for row in rows.values())
        bucket = int(newest // s.bucket_seconds)
        st = stage.table[entity_id] = _EntityWindows.from_buckets(
            newest, bucket, {b: row[:3] for b, row in rows.items()}, widths)
        for b, row in rows.items():
            if b in st.counts:
                written = row[4:4 + n_sources]
                stage.skip_below[(entity_id, b)] = written
                upto = [max(u, w) for u, w in zip(upto, written)]
            else:
                stage.expired.append((entity_id, b))  # left the windows: tombstoned at the next flush
        stage.newest = max(stage.newest, newest)
    if stage.skip_below:
        stage.restored_upto = upto
    batches.sort(key=lambda b: b[0])
    for newest, key, ids in batches:
        stage.newest = max(stage.newest, newest)
        stage.seen_batches.append((key, newest))
        for event_id, ts, pos in ids:
            stage.seen[event_id] = (ts, pos)
    if math.isfinite(stage.newest):
        stage._seen_prune_at = 0  # prune what the horizon or max_seen no longer keeps
        stage._prune_seen()
    return stage
