"""A seeded generator of large ads event logs with delayed conversions.

- Items have power-law (Zipf) popularity; advertisers own items (advertiser sizes are
  Zipf too) and mostly sell in one category.
- Users and items have latent vectors (items cluster by category); the user x item affinity
  drives both the click and the conversion probability, so a retriever can learn from the
  log. Intercepts are calibrated so the mean CTR and the conversions-per-engagement rate hit
  the requested values on the generated impressions.
- Conversion delays are long-tailed (see ``delays``); a share of conversions carries no
  impression id (to be attributed by last touch downstream).

Everything is numpy-vectorised; the same seed gives the same log.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from convcg.contract import SURFACES, Conversion, Engagement, Event, Impression
from streams.replay.datasets.delays import draw_conversion_delays
from streams.replay.datasets.event_log import EventLog, make_catalog, sort_events
from streams.replay.datasets.settings import DatasetSettings

log = logging.getLogger(__name__)

NAME = "synthetic"
DAY = 86400.0
DEFAULT_START_TS = 1_704_067_200.0  # 2024-01-01T00:00:00Z
SURFACE_SHARES = (0.5, 0.3, 0.2)
ENGAGEMENT_TYPES_SHARES = {"click": 0.8, "closeup": 0.1, "save": 0.07, "add_to_cart": 0.03}
CONVERSION_TYPES_SHARES = {"checkout": 0.85, "add_to_cart": 0.15}
MAX_POSITION = 24
ADVERTISER_MAIN_CATEGORY_SHARE = 0.8
ITEM_NOISE_SCALE = 0.6
USER_NOISE_SCALE = 0.8
CLICK_LAG_LOG_MEAN, CLICK_LAG_LOG_SD = np.log(5.0), 0.8
DWELL_LOG_MEAN, DWELL_LOG_PER_AFFINITY, DWELL_LOG_SD = np.log(15_000.0), 0.4, 0.7
PRICE_LOG_MEAN, PRICE_LOG_SD, CATEGORY_PRICE_LOG_SD = np.log(30.0), 0.5, 0.6
CALIBRATION_STEPS = 60


@dataclass(frozen=True)
class SyntheticConfig:
    n_users: int = 10_000
    n_items: int = 5_000
    n_advertisers: int = 200
    n_impressions: int = 200_000
    seed: int = 0
    days: float = 14.0
    start_ts: float = DEFAULT_START_TS
    n_categories: int = 20
    dim: int = 16
    ctr: float = 0.03
    conversions_per_engagement: float = 0.1
    click_id_share: float = 0.5
    popularity_exponent: float = 1.05
    affinity_weight: float = 1.5  # logit slope of click / conversion on standardized affinity

    def validate(self) -> None:
        for name in ("n_users", "n_items", "n_advertisers", "n_categories", "dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.n_impressions < 0:
            raise ValueError("n_impressions must be >= 0")
        for name in ("ctr", "conversions_per_engagement"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in (0, 1)")
        if not 0.0 <= self.click_id_share <= 1.0:
            raise ValueError("click_id_share must be in [0, 1]")
        if self.days <= 0:
            raise ValueError("days must be > 0")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def calibrate_intercept(scores: np.ndarray, target_mean: float) -> float:
    """The intercept ``a`` with mean(sigmoid(a + scores)) == target_mean (bisection)."""
    lo, hi = -30.0, 30.0
    for _ in range(CALIBRATION_STEPS):
        mid = (lo + hi) / 2
        if _sigmoid(mid + scores).mean() < target_mean:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def zipf_probabilities(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Power-law probabilities over ``n`` ids in a random (seeded) rank order."""
    p = 1.0 / np.arange(1, n + 1) ** exponent
    p = p[rng.permutation(n)]
    return p / p.sum()


def _choice_by_shares(rng: np.random.Generator, shares: dict[str, float], n: int) -> np.ndarray:
    p = np.array(list(shares.values()))
    return rng.choice(len(p), size=n, p=p / p.sum())


def synthetic(n_users: int = 10_000, n_items: int = 5_000, n_advertisers: int = 200,
              n_impressions: int = 200_000, seed: int = 0, settings: DatasetSettings | None = None,
              **options) -> EventLog:
    """Generate a log; ``options`` are further ``SyntheticConfig`` fields (days, ctr, ...)."""
    cfg = SyntheticConfig(n_users=n_users, n_items=n_items, n_advertisers=n_advertisers,
                          n_impressions=n_impressions, seed=seed, **options)
    cfg.validate()
    s = settings or DatasetSettings()
    rng = np.random.default_rng(cfg.seed)

    # catalog: advertisers own items, mostly in their main category
    advertiser_main_cat = rng.integers(cfg.n_categories, size=cfg.n_advertisers)
    item_adv = rng.choice(cfg.n_advertisers, size=cfg.n_items, p=zipf_probabilities(rng, cfg.n_advertisers, 1.0))
    item_cat = np.where(rng.random(cfg.n_items) < ADVERTISER_MAIN_CATEGORY_SHARE,
                        advertiser_main_cat[item_adv], rng.integers(cfg.n_categories, size=cfg.n_items))
    cat_price = rng.normal(PRICE_LOG_MEAN, CATEGORY_PRICE_LOG_SD, size=cfg.n_categories)
    price = np.round(np.exp(cat_price[item_cat] + rng.normal(0, PRICE_LOG_SD, size=cfg.n_items)), 2)

    # latent preferences
    centers = rng.normal(size=(cfg.n_categories, cfg.dim))
    item_vec = centers[item_cat] + ITEM_NOISE_SCALE * rng.normal(size=(cfg.n_items, cfg.dim))
    user_cat = rng.integers(cfg.n_categories, size=cfg.n_users)
    user_vec = centers[user_cat] + USER_NOISE_SCALE * rng.normal(size=(cfg.n_users, cfg.dim))

    # impressions
    n = cfg.n_impressions
    user_activity = rng.lognormal(0.0, 1.0, size=cfg.n_users)
    users = rng.choice(cfg.n_users, size=n, p=user_activity / user_activity.sum())
    items = rng.choice(cfg.n_items, size=n, p=zipf_probabilities(rng, cfg.n_items, cfg.popularity_exponent))
    imp_ts = cfg.start_ts + rng.uniform(0, cfg.days * DAY, size=n)
    surface = rng.choice(len(SURFACES), size=n, p=SURFACE_SHARES)
    position = rng.integers(1, MAX_POSITION + 1, size=n)
    affinity = np.einsum("ij,ij->i", user_vec[users], item_vec[items])
    z = (affinity - affinity.mean()) / (affinity.std() or 1.0) if n else affinity

    # engagements
    click_scores = cfg.affinity_weight * z
    p_click = _sigmoid(calibrate_intercept(click_scores, cfg.ctr) + click_scores) if n else z
    engaged = np.flatnonzero(rng.random(n) < p_click)
    eng_ts = imp_ts[engaged] + rng.lognormal(CLICK_LAG_LOG_MEAN, CLICK_LAG_LOG_SD, size=len(engaged))
    eng_type = _choice_by_shares(rng, ENGAGEMENT_TYPES_SHARES, len(engaged))
    dwell = np.round(rng.lognormal(DWELL_LOG_MEAN + DWELL_LOG_PER_AFFINITY * z[engaged], DWELL_LOG_SD)).astype(np.int64)

    # conversions, a fraction of engagements, after a long-tailed delay
    conv_scores = cfg.affinity_weight * z[engaged]
    p_conv = (_sigmoid(calibrate_intercept(conv_scores, cfg.conversions_per_engagement) + conv_scores)
              if len(engaged) else conv_scores)
    conv_of = engaged[rng.random(len(engaged)) < p_conv]  # impression index of each conversion
    conv_pos = np.searchsorted(engaged, conv_of)  # its engagement index
    conv_ts = eng_ts[conv_pos] + draw_conversion_delays(rng, len(conv_of), s.delay)
    conv_type = _choice_by_shares(rng, CONVERSION_TYPES_SHARES, len(conv_of))
    conv_value = np.round(price[items[conv_of]] * (1 + rng.poisson(0.3, size=len(conv_of))), 2)
    conv_click_id = rng.random(len(conv_of)) < cfg.click_id_share

    user_str = [f"u{i}" for i in range(cfg.n_users)]
    item_str = [f"i{i}" for i in range(cfg.n_items)]
    adv_str = [f"a{i}" for i in range(cfg.n_advertisers)]
    item_adv_str = [adv_str[a] for a in item_adv.tolist()]
    catalog = make_catalog(item_str, item_adv_str, [f"c{c}" for c in item_cat.tolist()], price)

    prefix = f"syn{cfg.seed}"
    u_l, i_l = users.tolist(), items.tolist()
    events: list[Event] = [
        Impression(f"{prefix}-imp-{k}", f"{prefix}-{k}", t, user_str[u], item_str[i], item_adv_str[i],
                   SURFACES[sf], p)
        for k, (t, u, i, sf, p) in enumerate(zip(imp_ts.tolist(), u_l, i_l, surface.tolist(), position.tolist()))
    ]
    eng_types = list(ENGAGEMENT_TYPES_SHARES)
    events += [
        Engagement(f"{prefix}-eng-{k}", f"{prefix}-{k}", t, user_str[u_l[k]], item_str[i_l[k]], eng_types[et], d)
        for k, t, et, d in zip(engaged.tolist(), eng_ts.tolist(), eng_type.tolist(), dwell.tolist())
    ]
    conv_types = list(CONVERSION_TYPES_SHARES)
    events += [
        Conversion(f"{prefix}-cnv-{k}", t, user_str[u_l[k]], item_str[i_l[k]], item_adv_str[i_l[k]],
                   conv_types[ct], v, f"{prefix}-{k}" if has_id else None)
        for k, t, ct, v, has_id in zip(conv_of.tolist(), conv_ts.tolist(), conv_type.tolist(),
                                       conv_value.tolist(), conv_click_id.tolist())
    ]
    sort_events(events)
    log.info("synthetic(seed %d): %d impressions, %d engagements, %d conversions over %.1f days",
             cfg.seed, n, len(engaged), len(conv_of), cfg.days)
    return EventLog(name=NAME, events=events, catalog=catalog)
