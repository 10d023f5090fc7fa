"""Validating retrieval and admin requests (pure: dicts in, typed values or BadRequest out)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

from convcg.contract import SURFACES
from model.encoding import QUERY_TIME

MAX_RECENT_ITEMS = 200
MAX_ADD_ITEMS = 10_000
ITEM_FIELDS = ("item_id", "advertiser_id", "category", "price")


class BadRequest(ValueError):
    """A client error; the message says what to fix."""


@dataclass(frozen=True)
class RetrieveRequest:
    user_id: str
    surface: str
    k: int
    recent_items: tuple[str, ...] | None = None
    #: the query's time (event-time seconds); None: the service's clock
    as_of: float | None = None

    def query(self, user_features: Mapping[str, Any], now: float) -> dict[str, Any]:
        """The query dict for ``embed_queries``: online features, then the request's own fields,
        and the query time (``as_of``, else ``now``) the stored engagement sequence is read as of
        (``model.encoding.recent_sequences``: ages = query time - engagement time)."""
        q: dict[str, Any] = dict(user_features)
        q.update(user_id=self.user_id, surface=self.surface)
        q[QUERY_TIME] = self.as_of if self.as_of is not None else now
        if self.recent_items is not None:
            q["recent_items"] = list(self.recent_items)
        return q


def parse_retrieve(data: Mapping[str, Any], default_k: int, max_k: int,
                   default_surface: str = "home") -> RetrieveRequest:
    if not isinstance(data, Mapping):
        raise BadRequest("request body must be a JSON object")
    unknown = set(data) - {"user_id", "surface", "k", "recent_items", QUERY_TIME}
    if unknown:
        raise BadRequest(f"unknown field(s) {sorted(unknown)}; allowed: user_id, surface, k, recent_items, {QUERY_TIME}")
    user_id = data.get("user_id")
    if user_id is None or (isinstance(user_id, str) and not user_id.strip()):
        raise BadRequest("user_id is required")
    if not isinstance(user_id, (str, int)) or isinstance(user_id, bool):
        raise BadRequest("user_id must be a string")
    surface = data.get("surface", default_surface)
    if surface not in SURFACES:
        raise BadRequest(f"unknown surface {surface!r}; expected one of {list(SURFACES)}")
    raw_k = data.get("k", default_k)
    try:
        if isinstance(raw_k, bool) or (isinstance(raw_k, float) and not raw_k.is_integer()):
            raise ValueError
        k = int(raw_k)
    except (TypeError, ValueError):
        raise BadRequest(f"k must be an integer, got {raw_k!r}") from None
    if not 1 <= k <= max_k:
        raise BadRequest(f"k must be between 1 and {max_k}, got {k}")
    recent = data.get("recent_items")
    if recent is not None:
        if isinstance(recent, str):
            recent = [r for r in recent.split(",") if r]
        if not isinstance(recent, list) or not all(isinstance(r, (str, int)) for r in recent):
            raise BadRequest("recent_items must be a list of item ids (or comma-separated in a query string)")
        if len(recent) > MAX_RECENT_ITEMS:
            raise BadRequest(f"recent_items holds at most {MAX_RECENT_ITEMS} ids")
        recent = tuple(str(r) for r in recent)
    return RetrieveRequest(user_id=str(user_id), surface=surface, k=k, recent_items=recent,
                           as_of=_query_time(data.get(QUERY_TIME)))


def _query_time(raw: Any) -> float | None:
    """``as_of``: event-time seconds (a number, or its text in a query string), finite, >= 0."""
    if raw is None:
        return None
    try:
        if isinstance(raw, bool):
            raise ValueError
        value = float(raw)
    except (TypeError, ValueError):
        raise BadRequest(f"{QUERY_TIME} must be event-time seconds, got {raw!r}") from None
    if not math.isfinite(value) or value < 0:
        raise BadRequest(f"{QUERY_TIME} must be finite seconds >= 0, got {raw!r}")
    return value


def parse_new_items(data: Any) -> list[dict[str, Any]]:
    """``{"items": [{"item_id", "advertiser_id", optional "category", "price"}]}`` -> rows."""
    if not isinstance(data, Mapping) or not isinstance(data.get("items"), list):
        raise BadRequest('body must be {"items": [{"item_id": ..., "advertiser_id": ...}, ...]}')
    items = data["items"]
    if len(items) > MAX_ADD_ITEMS:
        raise BadRequest(f"at most {MAX_ADD_ITEMS} items per request")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise BadRequest(f"items[{i}] must be an object")
        for key in ("item_id", "advertiser_id"):
            if not isinstance(item.get(key), str) or not item[key]:
                raise BadRequest(f"items[{i}].{key} must be a non-empty string")
        row = {k: item[k] for k in ITEM_FIELDS if item.get(k) is not None}
        if "price" in row:
            try:
                row["price"] = float(row["price"])
            except (TypeError, ValueError):
                raise BadRequest(f"items[{i}].price must be a number") from None
        rows.append(row)
    return rows
