"""Reading entity rows from a Feast online store: the part of the Feast store's contract every
component that reads it shares (the features service answering lookups, the retrieval service
reading a user's row in-process).

Both call the configured Feast online store's own ``online_read`` (Feast's key encoding and
value protos; no per-call registry or SDK bookkeeping) and decode its answer here, so they
read the same values the same way. ``import feast`` happens inside the functions only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence


def value_to_python(v) -> Any:
    """Decode one Feast ``ValueProto`` (the kinds this repo stores)."""
    kind = v.WhichOneof("val")
    if kind is None or kind == "null_val":
        return None
    x = getattr(v, kind)
    if kind.endswith("_list_val"):
        return list(x.val)
    return x


def read_online_rows(online_store, repo_config, feature_view, join_key: str, entity_ids: Sequence[str],
                     names: Sequence[str]) -> list[dict[str, Any]]:
    """One dict per entity id, in order: ``entity_id``, ``event_ts`` (None when the store has
    nothing for it) and ``features`` (name -> value or None) of ``feature_view``."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    keys = [EntityKey(join_keys=[join_key], entity_values=[Value(string_val=e)]) for e in entity_ids]
    # list(names): Feast's Redis store appends its '_ts:<view>' field to the list it is given
    rows = online_store.online_read(repo_config, feature_view, keys, list(names))
    out = []
    for entity_id, (ts, values) in zip(entity_ids, rows):
        values = values or {}
        feats = {n: value_to_python(values[n]) if n in values else None for n in names}
        # Redis answers a missing key with empty values and an epoch-0 timestamp
        found = isinstance(ts, datetime) and ts.timestamp() > 0 and any(v is not None for v in feats.values())
        out.append({"entity_id": entity_id, "event_ts": ts.timestamp() if found else None, "features": feats})
    return out
