"""Label rows -> training examples (pure pandas/numpy/torch, no I/O).

A label row is a served impression with its outcome (see ``convcg.contract.Label``):
``conversion`` and ``correction`` rows are conversion positives, ``engagement`` rows are
engagement positives weighted by ``engagement_weight``, ``negative`` rows are hard negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from convcg.contract import LABEL_FIELDS
from model.encoding import (
    ITEM_PREFIXES,
    RECENT_ITEMS_FEATURE,
    USER_PREFIX,
    ItemInputs,
    QueryInputs,
    encode_items,
    encode_queries,
    numeric_feature_columns,
)
from model.config import ModelConfig
from training.losses import ROLE_CONVERSION, ROLE_ENGAGEMENT, ROLE_NEGATIVE

CONVERSION_KINDS = ("conversion", "correction")
ENGAGEMENT_KINDS = ("engagement",)
NEGATIVE_KINDS = ("negative",)
REQUIRED_LABEL_COLUMNS = ("user_id", "item_id", "advertiser_id", "surface", "impression_ts", "label_ts", "kind")
CATALOG_COLUMNS = ("item_id", "advertiser_id", "category", "price")


class LabelDataError(ValueError):
    """Training data does not have the shape the trainer needs."""


def validate_labels(labels: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_LABEL_COLUMNS if c not in labels.columns]
    if missing:
        raise LabelDataError(f"label table lacks columns {missing}; has {list(labels.columns)}")


def labels_frame(labels) -> pd.DataFrame:
    """A list of ``Label`` objects or dicts, or a frame, as a frame with the label columns."""
    if isinstance(labels, pd.DataFrame):
        return labels
    rows = [lab if isinstance(lab, dict) else lab.to_dict() for lab in labels]
    return pd.DataFrame(rows, columns=list(LABEL_FIELDS) if not rows else None)


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


def build_examples(labels: pd.DataFrame, catalog: pd.DataFrame | None, config: ModelConfig) -> Examples:
    validate_labels(labels)
    role, weight = roles_and_weights(labels)
    keep = role >= 0
    frame = labels[keep].reset_index(drop=True)
    role, weight = role[keep], weight[keep]
    if RECENT_ITEMS_FEATURE not in frame.columns and "recent_items" not in frame.columns:
        raise ValueError(f"label rows without a {RECENT_ITEMS_FEATURE} (or recent_items) column: join the "
                         "point-in-time dataset (convcg dataset), or build the sequences from the label "
                         "history with training.trainer.training_examples")
    frame = join_catalog(frame, catalog)
    logq = item_log_probability(frame["item_id"], role > ROLE_NEGATIVE)
    return Examples(
        queries=encode_queries(frame, config),
        items=encode_items(frame, config),
        role=torch.from_numpy(role),
        weight=torch.from_numpy(weight),
        logq=torch.from_numpy(logq),
    )


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
