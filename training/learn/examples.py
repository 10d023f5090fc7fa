"""Training examples and the label-row helpers they are made with (pure pandas/numpy/torch, no I/O).

A label row is a served impression with its outcome (see ``convcg.contract.Label``):
``conversion`` and ``correction`` rows are conversion positives, ``engagement`` rows are
engagement positives weighted by ``engagement_weight``, ``negative`` rows are hard negatives.

``Examples`` are encoded rows; ``CatalogExamples`` add each row's catalog position and visible
history; a ``TrainingSet`` is those and the catalog the softmax ranks against. They are built in
one place, ``training.learn.rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from model.encoding import (
    ITEM_PREFIXES,
    USER_PREFIX,
    ItemInputs,
    QueryInputs,
    encode_items,
    numeric_feature_columns,
)
from model.towers import TwoTowerModel
from training.history import CONVERSION_KINDS, ENGAGEMENT_KINDS, NEGATIVE_KINDS
from training.learn.losses import ROLE_CONVERSION, ROLE_ENGAGEMENT, ROLE_NEGATIVE
from training.learn.sequences import HistoryRows

REQUIRED_LABEL_COLUMNS = ("user_id", "item_id", "advertiser_id", "surface", "impression_ts", "label_ts", "kind")


class LabelDataError(ValueError):
    """Training data does not have the shape the trainer needs."""


def validate_labels(labels: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise LabelDataError(f"label table lacks columns {missing}; has {list(labels.columns)}")


def roles_and_weights(labels: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    kind = labels["kind"].to_numpy()
    role = np.full(len(labels), -1, dtype=np.int64)
    role[np.isin(kind, NEGATIVE_KINDS)] = ROLE_NEGATIVE
    role[np.isin(kind, ENGAGEMENT_KINDS)] = ROLE_ENGAGEMENT
    role[np.isin(kind, CONVERSION_KINDS)] = ROLE_CONVERSION
    weight = np.ones(len(labels), dtype=np.float32)
    if "engagement_weight" in labels.columns:
        ew = pd.to_numeric(labels["engagement_weight"], errors="coerce").fillna(1.0).to_numpy(np.float32)
        is_eng = role == ROLE_ENGAGEMENT
        weight[is_eng] = np.where(ew[is_eng] > 0, ew[is_eng], 1.0)
    return role, weight


def item_log_probability(item_ids: pd.Series, positive: np.ndarray) -> np.ndarray:
    """log of each row's item frequency among positive rows (the in-batch sampling
    probability estimate for the logQ correction); items never positive get the minimum."""
    counts = item_ids[positive].value_counts()
    total = max(int(positive.sum()), 1)
    freq = item_ids.map(counts).fillna(0.5).to_numpy(np.float64) / total
    return np.log(freq).astype(np.float32)


def join_catalog(labels: pd.DataFrame, catalog: pd.DataFrame | None) -> pd.DataFrame:
    """Add ``category`` and ``price`` from the catalog to label rows (by item_id)."""
    if catalog is None or len(catalog) == 0:
        return labels.assign(category="unknown", price=0.0)
    cols = [c for c in ("item_id", "category", "price") if c in catalog.columns]
    extra = catalog[cols].drop_duplicates("item_id")
    merged = labels.drop(columns=[c for c in ("category", "price") if c in labels.columns]).merge(
        extra, on="item_id", how="left")
    if "category" not in merged.columns:
        merged["category"] = "unknown"
    if "price" not in merged.columns:
        merged["price"] = 0.0
    merged["category"] = merged["category"].fillna("unknown")
    merged["price"] = pd.to_numeric(merged["price"], errors="coerce").fillna(0.0)
    return merged


def feature_columns(labels: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Numeric streaming feature columns present: (user side, item side)."""
    return numeric_feature_columns(labels, (USER_PREFIX,)), numeric_feature_columns(labels, ITEM_PREFIXES)


def time_split(labels: pd.DataFrame, holdout_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split by impression time: the latest ``holdout_fraction`` of rows are held out."""
    ordered = labels.sort_values("impression_ts", kind="stable")
    cut = int(round(len(ordered) * (1 - holdout_fraction)))
    return ordered.iloc[:cut], ordered.iloc[cut:]


def replay_sample(older: pd.DataFrame, n: int, seed: int = 0) -> pd.DataFrame:
    """A uniform sample of ``n`` older labels (all of them if fewer)."""
    if n <= 0 or len(older) == 0:
        return older.iloc[:0]
    if n >= len(older):
        return older
    return older.sample(n=n, random_state=seed)


def sample_negatives(labels: pd.DataFrame, share: float, seed: int = 0) -> pd.DataFrame:
    """Every positive row and a seeded ``share`` of the negative ones (all rows when share >= 1)."""
    if share >= 1.0:
        return labels
    negative = (labels["kind"] == "negative").to_numpy()
    return labels[~negative | (np.random.default_rng(seed).random(len(labels)) < share)]


def catalog_positions(catalog: pd.DataFrame, item_ids) -> torch.Tensor:
    """Each item id's row in ``catalog`` (its first row, if it appears twice), as the catalog
    softmax's targets; every id must be in the catalog."""
    position = pd.Series(np.arange(len(catalog)), index=catalog["item_id"].to_numpy())
    position = position[~position.index.duplicated()]
    return torch.from_numpy(position.reindex(np.asarray(item_ids, dtype=object)).to_numpy(np.int64))


def catalog_from_labels(labels: pd.DataFrame) -> pd.DataFrame:
    """A minimal catalog (category unknown, price 0) when no catalog file exists."""
    cat = labels[["item_id", "advertiser_id"]].drop_duplicates("item_id").reset_index(drop=True)
    return cat.assign(category="unknown", price=0.0)


def full_catalog(catalog: pd.DataFrame | None, labels: pd.DataFrame) -> pd.DataFrame:
    """The catalog plus any labelled item missing from it (so every positive is findable)."""
    from_labels = catalog_from_labels(labels)
    if catalog is None or len(catalog) == 0:
        return from_labels
    missing = from_labels[~from_labels["item_id"].isin(catalog["item_id"])]
    return pd.concat([catalog, missing], ignore_index=True) if len(missing) else catalog.reset_index(drop=True)


@dataclass
class Examples:
    """All rows of a training set, encoded once; batches are index selections."""

    queries: QueryInputs
    items: ItemInputs
    role: torch.Tensor
    weight: torch.Tensor
    logq: torch.Tensor

    def __len__(self) -> int:
        return len(self.role)

    def select(self, idx) -> "Examples":
        return Examples(self.queries.select(idx), self.items.select(idx), self.role[idx],
                        self.weight[idx], self.logq[idx])


@dataclass
class CatalogExamples:
    """Examples, the catalog position of each row's item and (optionally) its history."""

    examples: Examples
    catalog_index: torch.Tensor  # [n] long
    history: HistoryRows | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, idx) -> "CatalogExamples":
        return CatalogExamples(self.examples.select(idx), self.catalog_index[idx],
                               None if self.history is None else self.history.select(idx))

    def candidate_mask(self, rows: torch.Tensor, n_items: int) -> torch.Tensor | None:
        """[len(rows), n_items] True where an item is not a candidate of the row's softmax:
        in its history and not its own positive; None without a history."""
        if self.history is None:
            return None
        mask = self.history.select(rows).mask(n_items)
        mask[torch.arange(len(rows)), self.catalog_index[rows]] = False
        return mask


@dataclass
class TrainingSet:
    """Encoded training rows and the catalog their softmax ranks against (``rows.catalog_index``
    are positions in ``catalog``)."""

    rows: CatalogExamples
    catalog: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, idx) -> "TrainingSet":
        return TrainingSet(self.rows.select(idx), self.catalog)

    def catalog_inputs(self, model: TwoTowerModel) -> ItemInputs | None:
        """The catalog encoded for ``model``'s catalog softmax; None for in-batch negatives."""
        return encode_items(self.catalog, model.config) if model.config.loss.negatives == "catalog" else None
