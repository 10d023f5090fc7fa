"""The Open Bandit Dataset sample (``obp`` 0.4.1 wheel, ``obd/random/all``): real impressions
of a fashion e-commerce recommender (ZOZOTOWN) with positions and clicks.

One impression per row; one click engagement (dwell unknown: 0 ms, at the impression's time)
per row with ``click == 1``; no conversions. ``user_id`` hashes the four user features (the
dataset has no user id); the advertiser is ``item_feature_1`` (a brand-like attribute cutting
across categories) and the category ``item_feature_3`` (the coarsest item hierarchy level).
"""

from __future__ import annotations

import hashlib
import io
import logging

import numpy as np
import pandas as pd

from convcg.contract import Engagement, Event, Impression
from streams.replay.datasets.event_log import EventLog, make_catalog, sort_events
from streams.replay.datasets.settings import DatasetSettings
from streams.replay.datasets.wheels import fetch_wheel, read_member

log = logging.getLogger(__name__)

NAME = "open-bandit"
MEMBER_DIR = "obp/dataset/obd/random/all"
USER_FEATURES = ("user_feature_0", "user_feature_1", "user_feature_2", "user_feature_3")
ADVERTISER_FEATURE = "item_feature_1"
CATEGORY_FEATURE = "item_feature_3"
SURFACE = "home"  # a single recommendation widget
HASH_CHARS = 12
SHORT_HASH_CHARS = 8


def user_id_from_features(values: tuple[str, ...]) -> str:
    return "u" + hashlib.sha1("|".join(values).encode()).hexdigest()[:HASH_CHARS]


def read_open_bandit_tables(settings: DatasetSettings | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows of all.csv, item_context.csv) from the cached wheel."""
    s = settings or DatasetSettings()
    wheel = fetch_wheel(s.obp_requirement, s.cache, s.pip_timeout_seconds)
    rows = pd.read_csv(io.BytesIO(read_member(wheel, f"{MEMBER_DIR}/all.csv")), index_col=0)
    items = pd.read_csv(io.BytesIO(read_member(wheel, f"{MEMBER_DIR}/item_context.csv")), index_col=0)
    return rows, items


def open_bandit(settings: DatasetSettings | None = None) -> EventLog:
    rows, items = read_open_bandit_tables(settings)
    items = items.sort_values("item_id")
    advertiser = {int(i): f"adv_obd_{str(a)[:SHORT_HASH_CHARS]}"
                  for i, a in zip(items["item_id"], items[ADVERTISER_FEATURE])}
    category = {int(i): f"cat_{str(c)[:SHORT_HASH_CHARS]}" for i, c in zip(items["item_id"], items[CATEGORY_FEATURE])}
    catalog = make_catalog([f"i{i}" for i in advertiser], list(advertiser.values()),
                           [category[i] for i in advertiser], [np.nan] * len(advertiser))

    ts = pd.to_datetime(rows["timestamp"], utc=True).astype("int64").to_numpy() / 1e9
    user_keys = rows[list(USER_FEATURES)].astype(str).itertuples(index=False, name=None)
    users = [user_id_from_features(k) for k in user_keys]
    events: list[Event] = []
    for row, t, u, item, pos, click in zip(rows.index, ts, users, rows["item_id"], rows["position"], rows["click"]):
        imp_id = f"obd-{row}"
        item = int(item)
        events.append(Impression(f"obd-imp-{row}", imp_id, float(t), u, f"i{item}",
                                 advertiser.get(item, "adv_obd_unknown"), SURFACE, int(pos)))
        if int(click) == 1:
            events.append(Engagement(f"obd-eng-{row}", imp_id, float(t), u, f"i{item}", "click", 0))
    sort_events(events)
    log.info("open-bandit: %d rows -> %d events, %d users, %d items",
             len(rows), len(events), len(set(users)), len(catalog))
    return EventLog(name=NAME, events=events, catalog=catalog)
