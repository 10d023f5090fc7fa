"""Query inputs from the user's point-in-time engagement sequence (pure, no I/O).

``SequenceFeatures`` turns (user, time) pairs into the query tower's inputs: the user's last
``recent_items`` engagements strictly before that time (newest first), each with its age at
that time and its dwell. Training rows (label rows, as of their query time:
``training.learn.rows``) and evaluation queries (``QueryBatch``, as of the query's time:
``training.evaluation.scoring.model_scorer``) go through the same code, so the model is trained
on the sequence it is graded with.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from model.config import ModelConfig
from model.encoding import PAD, QueryInputs, hash_ids
from training.history import HistoryIndex, Interactions, QueryBatch

DEFAULT_SURFACE = "home"


def catalog_frame(inter: Interactions) -> pd.DataFrame:
    """item_id, advertiser_id, category, price (unknown: 0) in the interactions' item order."""
    return pd.DataFrame({"item_id": inter.item_ids, "advertiser_id": inter.advertiser_ids[inter.item_advertiser],
                         "category": inter.item_category, "price": 0.0})


def item_frame(inter: Interactions, catalog: pd.DataFrame | None) -> pd.DataFrame:
    """The items the model ranks, in ``inter``'s order: id, advertiser and category of
    ``inter``, price from ``catalog`` (unknown: 0, as the trainer encodes it)."""
    items = catalog_frame(inter)
    if catalog is not None and "price" in catalog.columns and len(catalog):
        price = catalog.drop_duplicates("item_id").set_index("item_id")["price"]
        items["price"] = pd.to_numeric(items["item_id"].map(price), errors="coerce").fillna(0.0).to_numpy()
    return items


@dataclass
class HistoryRows:
    """Where each row's visible history lies: catalog positions ``items[start[r]:end[r]]``."""

    items: torch.Tensor  # [engagements] long, catalog position of each engagement
    start: torch.Tensor  # [n] long
    end: torch.Tensor    # [n] long

    def select(self, idx) -> "HistoryRows":
        return HistoryRows(self.items, self.start[idx], self.end[idx])

    def mask(self, n_items: int) -> torch.Tensor:
        """[n, n_items] True where the item is in the row's history."""
        lengths = self.end - self.start
        row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        first = torch.repeat_interleave(self.start - torch.cumsum(lengths, 0) + lengths, lengths)
        out = torch.zeros((len(lengths), n_items), dtype=torch.bool)
        out[row, self.items[first + torch.arange(int(lengths.sum()))]] = True
        return out


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
