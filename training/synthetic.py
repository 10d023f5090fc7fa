"""Small seeded synthetic catalogs and label tables with learnable structure.

Used by tests, benchmarks and ``train_tiny_model_for_tests``: each user prefers one
category; items of that category are engaged with high probability and converted with a
probability that depends on the item's advertiser. Some conversions arrive late as a
``correction`` after the impression was emitted as a ``negative``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from convcg.contract import SURFACES

START_TS = 1_700_000_000.0


def synthetic_catalog(n_items: int = 200, n_advertisers: int = 20, n_categories: int = 8,
                      seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "item_id": [f"i{i}" for i in range(n_items)],
        "advertiser_id": [f"a{rng.integers(n_advertisers)}" for _ in range(n_items)],
        "category": [f"c{i % n_categories}" for i in range(n_items)],
        "price": rng.lognormal(3.0, 1.0, n_items).round(2),
    })


def synthetic_labels(catalog: pd.DataFrame, n_users: int = 50, n_labels: int = 2000, seed: int = 0,
                     correction_rate: float = 0.2, start_ts: float = START_TS,
                     with_features: bool = False) -> pd.DataFrame:
    """Label rows (the ``convcg.contract.Label`` columns) for ``n_labels`` impressions."""
    rng = np.random.default_rng(seed)
    categories = sorted(catalog["category"].unique())
    advertisers = sorted(catalog["advertiser_id"].unique())
    adv_quality = {a: rng.uniform(0.1, 0.9) for a in advertisers}
    user_cat = {f"u{u}": categories[rng.integers(len(categories))] for u in range(n_users)}
    by_cat = {c: catalog.index[catalog["category"] == c].to_numpy() for c in categories}
    rows = []
    ts = start_ts
    for n in range(n_labels):
        user = f"u{rng.integers(n_users)}"
        ts += float(rng.exponential(60.0))
        # half of the impressions come from the user's category (a targeted server)
        pool = by_cat[user_cat[user]] if rng.random() < 0.5 else catalog.index.to_numpy()
        item = catalog.loc[pool[rng.integers(len(pool))]]
        liked = item["category"] == user_cat[user]
        engaged = rng.random() < (0.8 if liked else 0.05)
        converted = engaged and rng.random() < adv_quality[item["advertiser_id"]]
        base = dict(impression_id=f"imp{seed}-{n}", user_id=user, item_id=item["item_id"],
                    advertiser_id=item["advertiser_id"], surface=SURFACES[rng.integers(len(SURFACES))],
                    impression_ts=ts, position=int(rng.integers(10)))
        dwell = float(rng.exponential(20.0))
        if engaged:
            rows.append(dict(base, label_id=f"{base['impression_id']}:engagement", label_ts=ts + 5,
                             kind="engagement", engagement=1, engagement_weight=1.0 + np.log1p(dwell)))
        if converted and rng.random() < correction_rate:
            # conversion arrived after the negative window: negative first, then correction
            rows.append(dict(base, label_id=f"{base['impression_id']}:negative", label_ts=ts + 3600,
                             kind="negative"))
            rows.append(dict(base, label_id=f"{base['impression_id']}:correction:c{n}", label_ts=ts + 7200,
                             kind="correction", conversion=1, conversion_value=float(item["price"])))
        elif converted:
            rows.append(dict(base, label_id=f"{base['impression_id']}:conversion:c{n}", label_ts=ts + 600,
                             kind="conversion", conversion=1, conversion_value=float(item["price"])))
        elif not engaged:
            rows.append(dict(base, label_id=f"{base['impression_id']}:negative", label_ts=ts + 3600,
                             kind="negative"))
    frame = pd.DataFrame(rows)
    for col, default in (("conversion", 0), ("conversion_value", 0.0), ("engagement", 0),
                         ("engagement_weight", 0.0)):
        frame[col] = frame[col].fillna(default)
    frame["conversion"] = frame["conversion"].astype(int)
    frame["engagement"] = frame["engagement"].astype(int)
    if with_features:
        frame["user__engagements_7d"] = rng.poisson(3, len(frame)).astype(float)
        frame["item__impressions_1d"] = rng.poisson(50, len(frame)).astype(float)
        frame["advertiser__cvr_7d"] = rng.uniform(0, 0.2, len(frame))
    return frame.sort_values("label_ts", kind="stable").reset_index(drop=True)
