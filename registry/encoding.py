"""Turning tables into model inputs (pure functions, no I/O).

Ids are hashed into a fixed number of buckets (a stable hash, so an id never seen in
training still gets a bucket and a run tomorrow hashes like a run today). Numeric features
are squashed with a signed log1p so counts of any size fit one scale without fitted stats.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
import torch

from registry.model_config import ModelConfig

USER_PREFIX = "user__"
ITEM_PREFIXES = ("item__", "advertiser__")
#: list-valued user feature written by the features component (newest first)
RECENT_ITEMS_FEATURE = "user__last_engaged_items"
UNKNOWN_CATEGORY = "unknown"
#: padding slot of the recent-items table (real buckets are shifted by one)
PAD = 0


def hash_ids(values: Iterable, buckets: int, salt: str) -> np.ndarray:
    """Stable hash of ids (any type, compared as strings) into ``[0, buckets)``."""
    arr = np.asarray([f"{salt}:{v}" for v in values], dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    return (pd.util.hash_array(arr) % np.uint64(buckets)).astype(np.int64)


def squash(values: np.ndarray) -> np.ndarray:
    """Signed log1p; NaN and infinities become 0."""
    v = np.asarray(values, dtype=np.float64)
    v = np.where(np.isfinite(v), v, 0.0)
    return (np.sign(v) * np.log1p(np.abs(v))).astype(np.float32)


def numeric_feature_columns(frame: pd.DataFrame, prefixes: Sequence[str]) -> list[str]:
    """Numeric columns whose name starts with one of ``prefixes`` (sorted, stable order)."""
    cols = [c for c in frame.columns if any(c.startswith(p) for p in prefixes)
            and pd.api.types.is_numeric_dtype(frame[c]) and not pd.api.types.is_bool_dtype(frame[c])]
    return sorted(cols)


def dense_matrix(frame: pd.DataFrame, columns: Sequence[str]) -> np.ndarray:
    """``[n, len(columns)]`` squashed values; a column missing from ``frame`` is all zeros."""
    out = np.zeros((len(frame), len(columns)), dtype=np.float32)
    for j, c in enumerate(columns):
        if c in frame.columns:
            out[:, j] = squash(pd.to_numeric(frame[c], errors="coerce").to_numpy())
    return out


@dataclass
class ItemInputs:
    item: torch.Tensor        # [n] long
    advertiser: torch.Tensor  # [n] long
    category: torch.Tensor    # [n] long
    dense: torch.Tensor       # [n, 1 + len(item_features)] float (price first)

    def __len__(self) -> int:
        return len(self.item)

    def select(self, idx) -> "ItemInputs":
        return ItemInputs(self.item[idx], self.advertiser[idx], self.category[idx], self.dense[idx])


@dataclass
class QueryInputs:
    user: torch.Tensor     # [n] long
    surface: torch.Tensor  # [n] long
    recent: torch.Tensor   # [n, recent_items] long, newest first, PAD where empty
    dense: torch.Tensor    # [n, len(user_features)] float
    recent_age: torch.Tensor | None = None    # [n, recent_items] float seconds at query time
    recent_dwell: torch.Tensor | None = None  # [n, recent_items] float dwell ms

    def __post_init__(self) -> None:
        if self.recent_age is None:
            self.recent_age = torch.zeros(self.recent.shape, dtype=torch.float32)
        if self.recent_dwell is None:
            self.recent_dwell = torch.zeros(self.recent.shape, dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.user)

    def select(self, idx) -> "QueryInputs":
        return QueryInputs(self.user[idx], self.surface[idx], self.recent[idx], self.dense[idx],
                           self.recent_age[idx], self.recent_dwell[idx])


def item_dense_width(config: ModelConfig) -> int:
    return 1 + len(config.item_features)


def encode_items(items: pd.DataFrame, config: ModelConfig) -> ItemInputs:
    """Encode rows with ``item_id, advertiser_id`` and optional ``category, price`` and
    ``item__*`` / ``advertiser__*`` feature columns."""
    n = len(items)
    category = items["category"] if "category" in items.columns else [UNKNOWN_CATEGORY] * n
    price = items["price"].to_numpy() if "price" in items.columns else np.zeros(n)
    dense = np.concatenate([squash(price)[:, None], dense_matrix(items, config.item_features)], axis=1)
    return ItemInputs(
        item=torch.from_numpy(hash_ids(items["item_id"], config.item_buckets, "item")),
        advertiser=torch.from_numpy(hash_ids(items["advertiser_id"], config.advertiser_buckets, "adv")),
        category=torch.from_numpy(hash_ids(category, config.category_buckets, "cat")),
        dense=torch.from_numpy(dense),
    )


def encode_recent(recent_lists: Sequence[Sequence | None], config: ModelConfig) -> np.ndarray:
    """``[n, recent_items]`` bucket+1 of each list's first ``recent_items`` ids, PAD-filled."""
    k = config.recent_items
    out = np.full((len(recent_lists), k), PAD, dtype=np.int64)
    if k == 0:
        return out
    rows, cols, ids = [], [], []
    for i, items in enumerate(recent_lists):
        if items is None or (isinstance(items, float) and np.isnan(items)):
            continue
        for j, item in enumerate(list(items)[:k]):
            rows.append(i)
            cols.append(j)
            ids.append(item)
    if ids:  # one vectorised hash for all lists
        out[np.asarray(rows), np.asarray(cols)] = hash_ids(ids, config.item_buckets, "item") + 1
    return out


def encode_queries(queries: pd.DataFrame, config: ModelConfig) -> QueryInputs:
    """Encode rows with ``user_id, surface``, optional ``recent_items`` (list of item ids,
    newest first; else ``user__last_engaged_items``) and ``user__*`` feature columns."""
    n = len(queries)
    surface = queries["surface"] if "surface" in queries.columns else ["home"] * n
    if "recent_items" in queries.columns:
        recent = queries["recent_items"].tolist()
    elif RECENT_ITEMS_FEATURE in queries.columns:
        recent = queries[RECENT_ITEMS_FEATURE].tolist()
    else:
        recent = [None] * n
    return QueryInputs(
        user=torch.from_numpy(hash_ids(queries["user_id"], config.user_buckets, "user")),
        surface=torch.from_numpy(hash_ids(surface, config.surface_buckets, "surface")),
        recent=torch.from_numpy(encode_recent(recent, config)),
        dense=torch.from_numpy(dense_matrix(queries, config.user_features)),
    )


def queries_frame(queries: list[dict]) -> pd.DataFrame:
    """Query dicts (``user_id, surface, recent_items?, <feature>?``) as a frame whose user
    feature columns carry the ``user__`` prefix (a bare feature name is accepted too)."""
    rows = []
    for q in queries:
        if "user_id" not in q:
            raise ValueError(f"query without user_id: {q!r}")
        row = {}
        for key, value in q.items():
            if key in ("user_id", "surface", "recent_items") or key.startswith(USER_PREFIX):
                row[key] = value
            else:
                row[USER_PREFIX + key] = value
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "recent_items" in frame.columns:
        frame["recent_items"] = [r if isinstance(r, (list, tuple, np.ndarray)) else None
                                 for r in frame["recent_items"]]
    return frame
