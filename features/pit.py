"""Pure point-in-time helpers for training sets (pandas in, pandas out, no I/O).

Two ideas:

1. **Snapshot cut (Feast issue #6615).** Feast's point-in-time join compares event timestamps
   only, so a value that was ingested late or backfilled (event time before an impression, but
   written after a dataset was built) silently changes an old dataset when it is rebuilt, and a
   value computed from data that arrived after the label existed leaks into it. Every offline
   row and label carries ``created`` (ingestion time, set by the sink). A dataset built *as of*
   ``S`` first drops every feature row and label with ``created > S``; Feast's join then keeps
   ``event_timestamp <= impression time``. Building "as of S" today or next month gives the same
   rows.

2. **Time-sliced source pruning.** Feast's file (dask) offline store joins each label to *every*
   row of its entity and then filters by time, so a busy entity (an advertiser with thousands of
   updates and thousands of labels) multiplies into millions of intermediate rows. The labels
   are cut into time slices ``[a, b]``; for each slice Feast sees only the rows it could pick:
   per entity key in the slice, the newest row before ``a`` plus the rows inside ``[a, b]``.
   The join answer is unchanged (the newest row <= t for t in [a, b] is one of those).
"""

from __future__ import annotations

import pandas as pd


def snapshot_cut(df: pd.DataFrame, as_of: pd.Timestamp, created_col: str = "created") -> pd.DataFrame:
    """Rows ingested at or before ``as_of``."""
    return df[df[created_col] <= as_of]


def dedupe_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """One row per ``label_id`` (the first ingested), the label topic being at-least-once."""
    return labels.sort_values(["created", "label_id"], kind="stable").drop_duplicates("label_id", keep="first")


def time_slices(sorted_ts: pd.Series, rows_per_slice: int) -> list[tuple[int, int]]:
    """Index ranges [start, stop) of consecutive slices of a time-sorted column. A slice never
    splits equal timestamps, so slice boundaries are strict in time."""
    n = len(sorted_ts)
    out, start = [], 0
    values = sorted_ts.to_numpy()
    while start < n:
        stop = min(start + rows_per_slice, n)
        while stop < n and values[stop] == values[stop - 1]:
            stop += 1
        out.append((start, stop))
        start = stop
    return out


def prune_for_slice(rows: pd.DataFrame, key: str, keys_in_slice, start: pd.Timestamp,
                    end: pd.Timestamp, ts_col: str = "event_timestamp",
                    created_col: str = "created") -> pd.DataFrame:
    """Feature rows that a point-in-time join of labels with times in [start, end] and keys in
    ``keys_in_slice`` could return: per key, the newest row before ``start`` (newest ingestion
    wins a tie) and every row inside [start, end]."""
    rows = rows[rows[key].isin(keys_in_slice)]
    inside = rows[(rows[ts_col] >= start) & (rows[ts_col] <= end)]
    before = rows[rows[ts_col] < start]
    if len(before):
        before = before.sort_values([ts_col, created_col], kind="stable").drop_duplicates(key, keep="last")
    return pd.concat([before, inside], ignore_index=True)


def asof_join(queries: pd.DataFrame, rows: pd.DataFrame, key: str, features: list[str],
              ttl: pd.Timedelta | None, prefix: str, ts_col: str = "event_timestamp",
              created_col: str | None = "created") -> pd.DataFrame:
    """The same point-in-time rule as Feast's join, as one sorted ``merge_asof`` per view:
    per (key, time) in ``queries``, the row with the newest ``ts_col <= time`` (newest
    ingestion wins a tie), no older than ``ttl``. Returns key, time and ``<prefix>__<feature>``
    columns. O(n log n) whatever the skew, where Feast's file-store join is quadratic per key."""
    q = queries[[key, ts_col]].drop_duplicates()
    q = q.assign(**{ts_col: q[ts_col].astype("datetime64[ns, UTC]")}).sort_values(ts_col, kind="stable")
    order = [ts_col, created_col] if created_col and created_col in rows.columns else [ts_col]
    r = rows.sort_values(order, kind="stable")
    r = r[[key, ts_col, *features]].reset_index(drop=True).rename(
        columns={ts_col: "__fts", **{f: f"{prefix}__{f}" for f in features}})
    r["__fts"] = r["__fts"].astype("datetime64[ns, UTC]")
    out = pd.merge_asof(q, r, left_on=ts_col, right_on="__fts", by=key, direction="backward",
                        allow_exact_matches=True, tolerance=ttl)
    return out.drop(columns=["__fts"])
