"""Query inputs from the user's point-in-time engagement sequence (pure, no I/O).

``SequenceFeatures`` turns (user, time) pairs into the query tower's inputs: the user's last
``recent_items`` engagements strictly before that time (newest first), each with its age at
that time and its dwell. Training rows (label rows, as of their impression time) and
evaluation queries (``QueryBatch``, as of the query's time) go through the same code, so the
model is trained on the sequence it is graded with.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.encoding import PAD, QueryInputs, encode_items, hash_ids
from model.config import ModelConfig
from training.catalog_loss import CatalogExamples, HistoryRows
from training.examples import (
    Examples,
    catalog_positions,
    item_log_probability,
    join_catalog,
    roles_and_weights,
    validate_labels,
)
from training.losses import ROLE_NEGATIVE
from training.pit_data import Interactions
from training.pit_protocol import HistoryIndex, QueryBatch

DEFAULT_SURFACE = "home"


def catalog_frame(inter: Interactions) -> pd.DataFrame:
    """item_id, advertiser_id, category, price (unknown: 0) in the interactions' item order."""
    return pd.DataFrame({"item_id": inter.item_ids, "advertiser_id": inter.advertiser_ids[inter.item_advertiser],
                         "category": inter.item_category, "price": 0.0})


class SequenceFeatures:
    def __init__(self, inter: Interactions, config: ModelConfig):
        self.inter, self.config = inter, config
        self.index = HistoryIndex(inter)
        self.item_bucket = hash_ids(inter.item_ids, config.item_buckets, "item") + 1
        self.user_position = pd.Series(np.arange(inter.n_users), index=inter.user_ids)

    def _inputs(self, user_ids, surfaces, batch: QueryBatch) -> QueryInputs:
        c = self.config
        items, age, dwell = batch.last_items(c.recent_items)
        items, age, dwell = items[:, ::-1], age[:, ::-1], dwell[:, ::-1]  # newest first
        recent = np.where(items >= 0, self.item_bucket[np.maximum(items, 0)], PAD)
        return QueryInputs(
            user=torch.from_numpy(hash_ids(user_ids, c.user_buckets, "user")),
            surface=torch.from_numpy(hash_ids(surfaces, c.surface_buckets, "surface")),
            recent=torch.from_numpy(np.ascontiguousarray(recent, dtype=np.int64)),
            dense=torch.zeros((len(batch), len(c.user_features)), dtype=torch.float32),
            recent_age=torch.from_numpy(np.ascontiguousarray(age, dtype=np.float32)),
            recent_dwell=torch.from_numpy(np.ascontiguousarray(dwell, dtype=np.float32)),
        )

    def for_batch(self, batch: QueryBatch, surface: str = DEFAULT_SURFACE) -> QueryInputs:
        return self._inputs(self.inter.user_ids[batch.user], [surface] * len(batch), batch)

    def history_bounds(self, user_ids: np.ndarray, as_of: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(user position or -1, start, end): users' engagement rows strictly before ``as_of``."""
        user = self.user_position.reindex(user_ids).fillna(-1).to_numpy(np.int64)
        known = user >= 0
        start = np.zeros(len(user), dtype=np.int64)
        end = np.zeros(len(user), dtype=np.int64)
        start[known] = self.inter.user_offsets[user[known]]
        end[known] = self.index.end(user[known], as_of[known])
        return user, start, end

    def at(self, user_ids: np.ndarray, as_of: np.ndarray, surfaces) -> QueryInputs:
        """Inputs of users (string ids; unknown ones have no history) as of ``as_of``."""
        user, start, end = self.history_bounds(user_ids, as_of)
        batch = QueryBatch(self.inter, np.maximum(user, 0), np.zeros(len(user), np.int64),
                           np.asarray(as_of, np.float64), start, end)
        return self._inputs(user_ids, surfaces, batch)

    def history_rows(self, user_ids: np.ndarray, as_of: np.ndarray) -> HistoryRows:
        """Each row's visible engagements as catalog positions (``catalog_frame`` order)."""
        _, start, end = self.history_bounds(user_ids, as_of)
        items = torch.from_numpy(self.inter.engagements["item"].to_numpy(np.int64))
        return HistoryRows(items, torch.from_numpy(start), torch.from_numpy(end))


def query_times(frame: pd.DataFrame, labels: pd.DataFrame, query_time: str) -> np.ndarray:
    """When each training row's query is asked: at its impression, or (``engagement``) at the
    impression's first engagement when it has one (the moment an evaluation query is asked),
    else at the impression."""
    ts = frame["impression_ts"].to_numpy(np.float64)
    if query_time == "impression":
        return ts
    eng = labels[labels["kind"] == "engagement"]
    first = eng.groupby("impression_id")["label_ts"].min()
    return frame["impression_id"].map(first).fillna(frame["impression_ts"]).to_numpy(np.float64)


def sequence_examples(labels: pd.DataFrame, features: SequenceFeatures, catalog: pd.DataFrame,
                      query_time: str = "impression") -> CatalogExamples:
    """Label rows as training examples (with each row's catalog position); each row's query
    is the user's sequence strictly before its query time (``query_times``)."""
    validate_labels(labels)
    role, weight = roles_and_weights(labels)
    keep = role >= 0
    frame = join_catalog(labels[keep].reset_index(drop=True), catalog)
    role, weight = role[keep], weight[keep]
    users, as_of = frame["user_id"].to_numpy(object), query_times(frame, labels, query_time)
    queries = features.at(users, as_of, frame["surface"].tolist())
    examples = Examples(queries=queries, items=encode_items(frame, features.config), role=torch.from_numpy(role),
                        weight=torch.from_numpy(weight),
                        logq=torch.from_numpy(item_log_probability(frame["item_id"], role > ROLE_NEGATIVE)))
    same_order = np.array_equal(catalog["item_id"].to_numpy(), features.inter.item_ids)
    return CatalogExamples(examples, catalog_positions(catalog, frame["item_id"]),
                           features.history_rows(users, as_of) if same_order else None)
