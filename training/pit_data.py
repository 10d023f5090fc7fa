"""An event log as integer-indexed arrays for the point-in-time protocol (pure, no I/O).

``Interactions`` holds the engagements (sorted by user, then time) and the conversions of a
log, with users and items as integer indices into ``user_ids`` / ``item_ids``. A conversion is
a positive at the time of the click it is attributed to (its impression id when it carries
one, else the user's latest engagement of that item at or before the conversion: last touch);
that click is when the retriever had to surface the item. A conversion with no click keeps its
own time. ``known_ts`` is when the conversion event itself arrived (what statistics "as of t"
may count).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np
import pandas as pd

from convcg.contract import Conversion, Engagement, Event, Impression


class EventLog(Protocol):
    """What is read of an event log (``streams.datasets.EventLog`` has it): its events in
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
