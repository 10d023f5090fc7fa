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

from model.config import ModelConfig
from model.query_columns import (
    QUERY_TIME,
    DictColumns,
    FrameColumns,
    QueryColumns,
    is_list,
    query_row,
)
from model.query_columns import (
    USER_PREFIX as USER_PREFIX,  # re-exported: the contract's name
)

ITEM_PREFIXES = ("item__", "advertiser__")
#: the user's engagement sequence as the features component stores it (``convcg.contract.
#: RECENT_SEQUENCE_FEATURES``, newest first): item ids, event times (s), dwells (ms)
RECENT_ITEMS_FEATURE = "user__last_engaged_items"
RECENT_TS_FEATURE = "user__last_engaged_ts"
RECENT_DWELL_FEATURE = "user__last_engaged_dwell_ms"
IMPRESSION_TIME = "impression_ts"
UNKNOWN_CATEGORY = "unknown"
#: padding slot of the recent-items table (real buckets are shifted by one)
PAD = 0


#: ``hash_ids`` hashes the distinct ids only (pandas' ``categorize``) above this many ids; below,
#: each id directly (the same hashes: factorising first costs more than it saves on a query)
HASH_DISTINCT_ABOVE = 10_000


def hash_ids(values: Iterable, buckets: int, salt: str) -> np.ndarray:
    """Stable hash of ids (any type, compared as strings) into ``[0, buckets)``."""
    arr = np.asarray([f"{salt}:{v}" for v in values], dtype=object)
    if len(arr) == 0:
        return np.zeros(0, dtype=np.int64)
    hashed = pd.util.hash_array(arr, categorize=len(arr) > HASH_DISTINCT_ABOVE)
    return (hashed % np.uint64(buckets)).astype(np.int64)


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


def recent_sequences(items: Sequence, ts: Sequence, dwell: Sequence, as_of: np.ndarray,
                     config: ModelConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The query tower's sequence input from stored engagement sequences, one row per query:
    ``items[r]`` / ``ts[r]`` / ``dwell[r]`` are a user's last engaged item ids, their event
    times and dwells (newest first, the streaming feature ``last_engaged_*``; None when the
    user has none), ``as_of[r]`` the query time. Keeps the engagements strictly before the
    query time, the newest ``recent_items`` of them: ``(recent [n, k] bucket + 1 or PAD, age
    [n, k] = as_of - ts in seconds, dwell [n, k] ms)``, 0 where padded (and where a kept
    engagement has no dwell). A row without times (ids only: a request's own
    ``recent_items``, or times that do not match the ids one for one) keeps its first ``k`` ids
    with age and dwell 0. A time that is not a number (NaN, None) is never before the query;
    a dwell that is not a finite number is 0.

    The one reading of the sequence: the retrieval service (online features, as of now), a
    training set of ``convcg dataset`` (as of each row's impression time) and
    ``training.learn.sequences.SequenceFeatures`` (from the event log) give the same input
    for the same user at the same time."""
    k, n = config.recent_items, len(items)
    age = np.zeros((n, k), dtype=np.float32)
    dwell_out = np.zeros((n, k), dtype=np.float32)
    rows, cols, ids = [], [], []
    for r in range(n if k else 0):
        row_items = items[r]
        if not is_list(row_items):
            continue
        row_ts = ts[r]
        if is_list(row_ts) and len(row_ts) == len(row_items):
            t = np.asarray(row_ts, dtype=np.float64)
            keep = np.flatnonzero(t < as_of[r])[:k]  # at or after the query time: not visible to it
            age[r, :len(keep)] = as_of[r] - t[keep]
            row_dwell = dwell[r]
            if is_list(row_dwell):
                d = np.asarray(row_dwell, dtype=np.float64)
                d = np.where(np.isfinite(d), d, 0.0)  # a dwell that is not a number: unknown, 0
                known = keep[keep < len(d)]  # a prefix of keep
                dwell_out[r, :len(known)] = d[known]
            kept = [row_items[m] for m in keep]
        else:
            kept = list(row_items[:k])
        rows.extend([r] * len(kept))
        cols.extend(range(len(kept)))
        ids.extend(kept)
    recent = np.full((n, k), PAD, dtype=np.int64)
    if ids:  # one vectorised hash for all lists
        recent[np.asarray(rows), np.asarray(cols)] = hash_ids(ids, config.item_buckets, "item") + 1
    return recent, age, dwell_out


def query_times(queries: QueryColumns) -> np.ndarray:
    """Each query's time: ``as_of`` (serving: now), else ``impression_ts`` (a training-set row
    is asked at its impression), else unknown (inf: every stored engagement is visible); a
    value that is not a number is unknown too."""
    for column in (QUERY_TIME, IMPRESSION_TIME):
        if queries.has(column):
            t = queries.numbers(column)
            return np.where(np.isnan(t), np.inf, t)
    return np.full(len(queries), np.inf)


def encode_query_columns(queries: QueryColumns, config: ModelConfig) -> QueryInputs:
    """The one query encoder. Rows with ``user_id, surface``, the user's sequence
    (``recent_items``: item ids, newest first, no times; else the stored
    ``user__last_engaged_items`` / ``_ts`` / ``_dwell_ms``, read as of ``query_times``:
    ``recent_sequences``) and ``user__*`` feature columns (a missing one is 0)."""
    n = len(queries)
    none = [None] * n

    def column(name):
        return queries.values(name) if queries.has(name) else none

    surface = queries.values("surface") if queries.has("surface") else ["home"] * n
    if queries.has("recent_items"):
        items, ts, dwell = queries.values("recent_items"), none, none
    else:
        items, ts, dwell = column(RECENT_ITEMS_FEATURE), column(RECENT_TS_FEATURE), column(RECENT_DWELL_FEATURE)
    recent, age, dwell_ms = recent_sequences(items, ts, dwell, query_times(queries), config)
    dense = np.zeros((n, len(config.user_features)), dtype=np.float32)
    for j, c in enumerate(config.user_features):
        if queries.has(c):
            dense[:, j] = squash(queries.numbers(c))
    return QueryInputs(
        user=torch.from_numpy(hash_ids(queries.values("user_id"), config.user_buckets, "user")),
        surface=torch.from_numpy(hash_ids(surface, config.surface_buckets, "surface")),
        recent=torch.from_numpy(recent),
        dense=torch.from_numpy(dense),
        recent_age=torch.from_numpy(age),
        recent_dwell=torch.from_numpy(dwell_ms),
    )


def encode_queries(queries: pd.DataFrame, config: ModelConfig) -> QueryInputs:
    """``encode_query_columns`` of a frame (training sets, evaluation, large batches)."""
    return encode_query_columns(FrameColumns(queries), config)


def encode_query_dicts(queries: Sequence[dict], config: ModelConfig) -> QueryInputs:
    """``encode_query_columns`` of query dicts, without a frame: the same input as
    ``encode_queries(queries_frame(queries))``, in a fraction of the time for a few queries."""
    return encode_query_columns(DictColumns(queries), config)


def queries_frame(queries: list[dict]) -> pd.DataFrame:
    """Query dicts (``user_id, surface, recent_items?, as_of?, <feature>?``) as a frame whose user
    feature columns carry the ``user__`` prefix (a bare feature name is accepted too:
    ``query_row``)."""
    frame = pd.DataFrame([query_row(q) for q in queries])
    if "recent_items" in frame.columns:
        frame["recent_items"] = [r if is_list(r) else None for r in frame["recent_items"]]
    return frame
