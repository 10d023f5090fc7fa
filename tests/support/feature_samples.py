"""Small, seeded sample data for tests and benchmarks (real wire shapes from the contract)."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd

from convcg.contract import FeatureUpdate, Label, label_id
from features.repo.definitions import EVENT_TIMESTAMP, stream_feature_schema


def full_update(entity: str, entity_id: str, event_ts: float, value: int,
                ingest_ms: int | None = None) -> FeatureUpdate:
    """An update setting every streaming feature of ``entity`` from ``value`` (counts = value,
    rates = value / 1000, last items = [f"i{value}"], number lists = [value / 1000])."""
    feats: dict = {}
    made = {"int": lambda: value, "float": lambda: value / 1000.0, "strings": lambda: [f"i{value}"],
            "floats": lambda: [value / 1000.0]}
    for name, kind in stream_feature_schema(entity).items():
        feats[name] = made[kind]()
    return FeatureUpdate(entity=entity, entity_id=entity_id, event_ts=event_ts,
                         ingest_ms=int(time.time() * 1000) if ingest_ms is None else ingest_ms,
                         features=feats)


def sample_label(impression_id: str, user_id: str, item_id: str, advertiser_id: str,
                 impression_ts: float, kind: str = "negative") -> Label:
    return Label(label_id=label_id(impression_id, kind), impression_id=impression_id, user_id=user_id,
                 item_id=item_id, advertiser_id=advertiser_id, surface="home",
                 impression_ts=impression_ts, label_ts=impression_ts + 60, kind=kind,
                 engagement=int(kind == "engagement"), conversion=int(kind == "conversion"))


def sample_catalog(item_ids: list[str], n_advertisers: int, since: float, seed: int = 0) -> pd.DataFrame:
    """The replay tool's catalog shape: item_id, advertiser_id, category, price, event_timestamp."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": item_ids,
        "advertiser_id": [f"a{rng.integers(n_advertisers)}" for _ in item_ids],
        "category": [f"c{rng.integers(20)}" for _ in item_ids],
        "price": rng.uniform(1, 200, len(item_ids)).round(2),
        EVENT_TIMESTAMP: pd.Timestamp(since, unit="s", tz="UTC"),
    })
