"""The history training and evaluation read: an event log or label rows as integer-indexed
arrays, and where a user's history ends as of a time (pure, no I/O).

``Interactions`` holds the engagements (sorted by user, then time) and the conversions of a
log, with users and items as integer indices into ``user_ids`` / ``item_ids``. A conversion is
a positive at the time of the click it is attributed to (its impression id when it carries
one, else the user's latest engagement of that item at or before the conversion: last touch);
that click is when the retriever had to surface the item. A conversion with no click keeps its
own time. ``known_ts`` is when the conversion event itself arrived (what statistics "as of t"
may count).

The trainer has no event log, only labels (``convcg.contract.Label``). They carry the same
history (``interactions_from_labels``): an ``engagement`` label is an engagement at its
``label_ts`` (its dwell is recovered from ``engagement_weight`` = 1 + log1p(dwell seconds), exact
below the weight's cap, the cap's dwell above it); a ``conversion`` / ``correction`` label is a
conversion known at its ``label_ts``, attributed like a conversion event.

``HistoryIndex`` finds where a user's engagements before a time end; ``QueryBatch`` is a batch of
queries with their visible history, what every scorer and the model's query inputs read.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from convcg.contract import Conversion, Engagement, Event, Impression

#: label kinds by role: conversion positives, engagement positives, hard negatives
CONVERSION_KINDS = ("conversion", "correction")
ENGAGEMENT_KINDS = ("engagement",)
NEGATIVE_KINDS = ("negative",)


class EventLog(Protocol):
    """What is read of an event log (``streams.replay.datasets.EventLog`` has it): its events in
    event-time order and its catalog (item_id, advertiser_id, category)."""

    events: Sequence[Event]
    catalog: pd.DataFrame


@dataclass(frozen=True)
class Interactions:
    user_ids: np.ndarray          # [n_users] object
    item_ids: np.ndarray          # [n_items] object, catalog order
    item_advertiser: np.ndarray   # [n_items] int, index into advertiser_ids
    advertiser_ids: np.ndarray    # [n_advertisers] object
    item_category: np.ndarray     # [n_items] object
    #: first engagement per (impression, item) (earliest ts, then smallest event id), sorted by
    #: (user, ts, item id, impression id): the sequence the streaming aggregates keep
    #: (``streams.aggregates.insert_recent``), so a tie in time is broken the same way
    engagements: pd.DataFrame     # user, item, ts, dwell_ms
    #: ``user_offsets[u]:user_offsets[u+1]`` are user u's rows of ``engagements``
    user_offsets: np.ndarray      # [n_users + 1]
    conversions: pd.DataFrame     # user, item, ts (attributed click time), known_ts

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)


def _event_frames(log: EventLog) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    imp, eng, conv = [], [], []
    for e in log.events:
        if isinstance(e, Engagement):
            eng.append((e.impression_id, e.user_id, e.item_id, e.ts, e.dwell_ms, e.event_id))
        elif isinstance(e, Conversion):
            conv.append((e.impression_id, e.user_id, e.item_id, e.advertiser_id, e.ts))
        elif isinstance(e, Impression):
            imp.append((e.item_id, e.advertiser_id))
    return (pd.DataFrame(imp, columns=["item", "advertiser"]),
            pd.DataFrame(eng, columns=["impression_id", "user", "item", "ts", "dwell_ms", "event_id"]),
            pd.DataFrame(conv, columns=["impression_id", "user", "item", "advertiser", "known_ts"]))


def _catalog(catalog: pd.DataFrame | None, imp: pd.DataFrame, eng: pd.DataFrame, conv: pd.DataFrame) -> pd.DataFrame:
    """The catalog plus every item the events name (advertiser from impressions or
    conversions, else ``unknown``)."""
    cat = catalog[["item_id", "advertiser_id", "category"]] if catalog is not None and len(catalog) else pd.DataFrame(
        columns=["item_id", "advertiser_id", "category"])
    seen = pd.concat([imp.rename(columns={"item": "item_id", "advertiser": "advertiser_id"}),
                      conv[["item", "advertiser"]].rename(columns={"item": "item_id", "advertiser": "advertiser_id"}),
                      eng[["item"]].rename(columns={"item": "item_id"}).assign(advertiser_id="unknown")])
    extra = seen[~seen["item_id"].isin(cat["item_id"])].drop_duplicates("item_id").assign(category="unknown")
    return pd.concat([cat, extra], ignore_index=True).drop_duplicates("item_id").reset_index(drop=True)


def attribute_conversions(conv: pd.DataFrame, eng: pd.DataFrame) -> pd.Series:
    """Time of the click each conversion is attributed to (NaN if none). ``conv`` has
    impression_id, user, item, known_ts; ``eng`` impression_id, user, item, ts (raw ids)."""
    by_impression = eng.drop_duplicates("impression_id").set_index("impression_id")["ts"]
    click_ts = conv["impression_id"].map(by_impression)
    # last touch: the latest engagement of the same (user, item) at or before the conversion
    missing = click_ts.isna()
    if missing.any():
        left = conv.loc[missing, ["user", "item", "known_ts"]].reset_index().sort_values("known_ts")
        right = eng[["user", "item", "ts"]].sort_values("ts")
        touched = pd.merge_asof(left, right, left_on="known_ts", right_on="ts", by=["user", "item"],
                                direction="backward")
        click_ts.loc[touched["index"].to_numpy()] = touched["ts"].to_numpy()
    return click_ts


def interactions_from_log(log: EventLog) -> Interactions:
    return interactions_from_frames(log.catalog, *_event_frames(log))


def interactions_from_frames(catalog: pd.DataFrame | None, imp: pd.DataFrame, eng: pd.DataFrame,
                             conv: pd.DataFrame) -> Interactions:
    """Interactions of event frames with raw ids: impressions (item, advertiser), engagements
    (impression_id, user, item, ts, dwell_ms, optional event_id), conversions (impression_id,
    user, item, advertiser, known_ts); ``catalog`` (item_id, advertiser_id, category) may be
    None. The first engagement per (impression, item) is by (ts, event_id), as the stream's."""
    order = ["ts", "event_id"] if "event_id" in eng.columns else ["ts"]
    eng = eng.sort_values(order, kind="stable").drop_duplicates(["impression_id", "item"], keep="first")
    catalog = _catalog(catalog, imp, eng, conv)
    item_index = pd.Series(np.arange(len(catalog)), index=catalog["item_id"].to_numpy())
    advertiser_ids, item_advertiser = np.unique(catalog["advertiser_id"].astype(str).to_numpy(),
                                                return_inverse=True)
    user_ids = np.unique(np.concatenate([eng["user"].to_numpy(object), conv["user"].to_numpy(object)]))
    user_index = pd.Series(np.arange(len(user_ids)), index=user_ids)

    conv = conv.assign(ts=attribute_conversions(conv, eng).fillna(conv["known_ts"]))
    engagements = pd.DataFrame({
        "user": user_index[eng["user"]].to_numpy(), "item": item_index[eng["item"]].to_numpy(),
        "ts": eng["ts"].to_numpy(np.float64), "dwell_ms": eng["dwell_ms"].to_numpy(np.float64),
        "item_id": eng["item"].astype(str).to_numpy(), "impression_id": eng["impression_id"].astype(str).to_numpy(),
    }).sort_values(["user", "ts", "item_id", "impression_id"], kind="stable").reset_index(drop=True)
    engagements = engagements.drop(columns=["item_id", "impression_id"])
    conversions = pd.DataFrame({
        "user": user_index[conv["user"]].to_numpy(), "item": item_index[conv["item"]].to_numpy(),
        "ts": conv["ts"].to_numpy(np.float64), "known_ts": conv["known_ts"].to_numpy(np.float64),
    }).sort_values(["ts", "user", "item"], kind="stable").reset_index(drop=True)
    offsets = np.searchsorted(engagements["user"].to_numpy(), np.arange(len(user_ids) + 1))
    return Interactions(user_ids=user_ids, item_ids=catalog["item_id"].to_numpy(object),
                        item_advertiser=item_advertiser.astype(np.int64), advertiser_ids=advertiser_ids,
                        item_category=catalog["category"].fillna("unknown").to_numpy(object),
                        engagements=engagements, user_offsets=offsets, conversions=conversions)


def dwell_ms_from_weight(weight: np.ndarray) -> np.ndarray:
    """Inverse of the label join's click-duration weight (1 + log1p(seconds)); 0 for a
    weight of 1 or less (a save, or no weight)."""
    w = np.nan_to_num(np.asarray(weight, dtype=np.float64), nan=1.0)
    return 1000.0 * np.expm1(np.maximum(w - 1.0, 0.0))


def label_frames(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(impressions, engagements, conversions) of label rows in ``interactions_from_frames`` form."""
    kind = labels["kind"].to_numpy()
    eng = labels[np.isin(kind, ENGAGEMENT_KINDS)]
    conv = labels[np.isin(kind, CONVERSION_KINDS)]
    weight = eng["engagement_weight"] if "engagement_weight" in eng.columns else np.ones(len(eng))
    return (
        pd.DataFrame({"item": labels["item_id"].to_numpy(object), "advertiser": labels["advertiser_id"].to_numpy(object)}),
        pd.DataFrame({"impression_id": eng["impression_id"].to_numpy(object), "user": eng["user_id"].to_numpy(object),
                      "item": eng["item_id"].to_numpy(object), "ts": eng["label_ts"].to_numpy(np.float64),
                      "dwell_ms": dwell_ms_from_weight(weight)}),
        pd.DataFrame({"impression_id": conv["impression_id"].to_numpy(object), "user": conv["user_id"].to_numpy(object),
                      "item": conv["item_id"].to_numpy(object), "advertiser": conv["advertiser_id"].to_numpy(object),
                      "known_ts": conv["label_ts"].to_numpy(np.float64)}),
    )


def interactions_from_labels(labels: pd.DataFrame, catalog: pd.DataFrame | None = None) -> Interactions:
    """The engagements and conversions of label rows (negatives only add their items), over
    ``catalog`` (item_id, advertiser_id, category) plus every labelled item."""
    return interactions_from_frames(catalog, *label_frames(labels))


class HistoryIndex:
    """Finds, for (user, time) pairs, where the user's engagements before that time end."""

    def __init__(self, inter: Interactions):
        eng = inter.engagements
        ts = eng["ts"].to_numpy()
        self.t0 = float(ts.min()) if len(ts) else 0.0
        #: user u's engagement at time s has key u * stride + (s - t0); keys are sorted
        self.stride = (float(ts.max()) - self.t0 if len(ts) else 0.0) + 1.0
        self.keys = eng["user"].to_numpy(np.float64) * self.stride + (ts - self.t0)
        self.offsets = inter.user_offsets

    def end(self, user: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        """Row after the last engagement of ``user`` strictly before ``as_of``."""
        clipped = np.clip(as_of - self.t0, -0.5, self.stride - 0.5)
        probe = user.astype(np.float64) * self.stride + clipped
        # clipping keeps the probe inside the user's key range; an exact tie stays excluded
        return np.clip(np.searchsorted(self.keys, probe, side="left"), self.offsets[user], self.offsets[user + 1])


@dataclass(frozen=True)
class QueryBatch:
    """Queries and their visible history: engagement rows ``start[q]:end[q]`` (time order)."""

    inter: Interactions
    user: np.ndarray
    item: np.ndarray
    as_of: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @cached_property
    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(query of each visible engagement, its row in ``inter.engagements``)."""
        lengths = self.end - self.start
        query = np.repeat(np.arange(len(self)), lengths)
        first = np.repeat(self.start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return query, first + np.arange(lengths.sum())

    def history_matrix(self, last_n: int | None = None) -> np.ndarray:
        """[queries, items] 1.0 where the item is in the visible history (its last ``last_n``
        engagements only, if given)."""
        query, row = self.flat
        if last_n is not None:
            keep = row >= np.maximum(self.end - last_n, self.start)[query]
            query, row = query[keep], row[keep]
        out = np.zeros((len(self), self.inter.n_items), dtype=np.float32)
        out[query, self.inter.engagements["item"].to_numpy()[row]] = 1.0
        return out

    def last_items(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``n`` visible engagements, oldest first, right-aligned: (item [q, n] with
        -1 for padding, age at ``as_of`` in seconds, dwell ms), padding 0."""
        eng = self.inter.engagements
        first = np.maximum(self.end - n, self.start)
        slot = np.arange(n)[None, :] - (n - (self.end - first))[:, None]  # index from first
        valid = slot >= 0
        rows = np.where(valid, first[:, None] + slot, 0)
        items = np.where(valid, eng["item"].to_numpy()[rows], -1)
        age = np.where(valid, self.as_of[:, None] - eng["ts"].to_numpy()[rows], 0.0)
        dwell = np.where(valid, eng["dwell_ms"].to_numpy()[rows], 0.0)
        return items, age, dwell
