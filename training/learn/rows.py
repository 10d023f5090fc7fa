"""Label rows -> training rows: the one place labels become encoded training examples.

Every path starts with ``labelled_rows`` (validate, each row's role and weight, keep the
positives and hard negatives, join the catalog's category and price) and ends with
``encoded_rows`` (items encoded, logQ, each row's catalog position and visible history). They
differ only in where a row's query, the user's engagement sequence, comes from:

* ``sequence_rows``: an event history (``training.history.Interactions``) as of the row's query
  time (``SequenceFeatures``, the evaluation's own query inputs);
* ``label_history_rows``: the same, the history built from label rows (the trainer has no
  event log), with the rows' ``user__*`` features as the dense inputs;
* ``joined_rows``: rows that carry their own sequence (a point-in-time feature join,
  ``convcg dataset``), encoded as the serving side encodes a query.

``training_set`` is the trainer's entry: ``joined_rows`` when the rows carry a sequence, else
``label_history_rows``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from model.config import ModelConfig
from model.encoding import RECENT_ITEMS_FEATURE, dense_matrix, encode_items, encode_queries
from training.history import interactions_from_labels
from training.learn.examples import (
    CatalogExamples,
    Examples,
    TrainingSet,
    catalog_positions,
    full_catalog,
    item_log_probability,
    join_catalog,
    roles_and_weights,
    validate_labels,
)
from training.learn.losses import ROLE_NEGATIVE
from training.learn.sequences import HistoryRows, SequenceFeatures, item_frame


@dataclass
class LabelledRows:
    """The label rows that train (positives and hard negatives), catalog joined, in order."""

    frame: pd.DataFrame
    role: np.ndarray
    weight: np.ndarray


def labelled_rows(labels: pd.DataFrame, catalog: pd.DataFrame | None) -> LabelledRows:
    validate_labels(labels)
    role, weight = roles_and_weights(labels)
    keep = role >= 0
    return LabelledRows(join_catalog(labels[keep].reset_index(drop=True), catalog), role[keep], weight[keep])


def encoded_rows(rows: LabelledRows, queries, config: ModelConfig, catalog: pd.DataFrame,
                 history: HistoryRows | None = None) -> CatalogExamples:
    """``rows`` with their encoded ``queries``, items, logQ and positions in ``catalog``."""
    examples = Examples(queries=queries, items=encode_items(rows.frame, config), role=torch.from_numpy(rows.role),
                        weight=torch.from_numpy(rows.weight),
                        logq=torch.from_numpy(item_log_probability(rows.frame["item_id"], rows.role > ROLE_NEGATIVE)))
    return CatalogExamples(examples, catalog_positions(catalog, rows.frame["item_id"]), history)


def row_query_times(frame: pd.DataFrame, labels: pd.DataFrame, query_time: str) -> np.ndarray:
    """When each training row's query is asked: at its impression, or (``engagement``) at the
    impression's first engagement when it has one (the moment an evaluation query is asked),
    else at the impression."""
    ts = frame["impression_ts"].to_numpy(np.float64)
    if query_time == "impression":
        return ts
    eng = labels[labels["kind"] == "engagement"]
    first = eng.groupby("impression_id")["label_ts"].min()
    return frame["impression_id"].map(first).fillna(frame["impression_ts"]).to_numpy(np.float64)


def sequence_rows(labels: pd.DataFrame, features: SequenceFeatures, catalog: pd.DataFrame,
                  query_time: str = "impression", user_features: bool = False) -> CatalogExamples:
    """Label rows as training examples; each row's query is the user's sequence strictly
    before its query time (``row_query_times``), its dense inputs the rows' ``user__*``
    features with ``user_features`` (else 0). The rows' visible history is kept for masking when
    ``catalog`` is in ``features``' item order."""
    rows = labelled_rows(labels, catalog)
    users, as_of = rows.frame["user_id"].to_numpy(object), row_query_times(rows.frame, labels, query_time)
    queries = features.at(users, as_of, rows.frame["surface"].tolist())
    if user_features:
        queries.dense = torch.from_numpy(dense_matrix(rows.frame, features.config.user_features))
    same_order = np.array_equal(catalog["item_id"].to_numpy(), features.inter.item_ids)
    return encoded_rows(rows, queries, features.config, catalog,
                        features.history_rows(users, as_of) if same_order else None)


def label_history_rows(train: pd.DataFrame, history: pd.DataFrame, catalog: pd.DataFrame | None,
                       config: ModelConfig, query_time: str = "engagement") -> TrainingSet:
    """Training rows whose queries are built like the point-in-time evaluation's: the user's
    last engagements in ``history`` (label rows, usually ``train`` plus older ones) strictly
    before each row's query time, with their ages and dwells; the rows' ``user__*`` features
    are the dense inputs. The softmax's catalog is the catalog plus every labelled item, in the
    history's order, so each row's visible history can be masked out of it."""
    validate_labels(train)
    everything = full_catalog(catalog, pd.concat([history, train], ignore_index=True))
    features = SequenceFeatures(interactions_from_labels(history, everything), config)
    items = item_frame(features.inter, everything)
    return TrainingSet(sequence_rows(train, features, items, query_time, user_features=True), items)


def joined_rows(train: pd.DataFrame, catalog: pd.DataFrame | None, config: ModelConfig) -> TrainingSet:
    """Rows that carry their own sequence (``user__last_engaged_*`` or ``recent_items``); the
    softmax's catalog is the catalog plus every labelled item (no history to mask: the rows
    carry ids only)."""
    items = full_catalog(catalog, train)
    rows = labelled_rows(train, items)
    frame = rows.frame
    if RECENT_ITEMS_FEATURE not in frame.columns and "recent_items" not in frame.columns:
        raise ValueError(f"label rows without a {RECENT_ITEMS_FEATURE} (or recent_items) column: join the "
                         "point-in-time dataset (convcg dataset), or build the sequences from the label "
                         "history with training.learn.rows.training_set")
    return TrainingSet(encoded_rows(rows, encode_queries(frame, config), config, items), items)


def carries_sequence(rows: pd.DataFrame) -> bool:
    return RECENT_ITEMS_FEATURE in rows.columns or "recent_items" in rows.columns


def training_set(train: pd.DataFrame, history: pd.DataFrame, catalog: pd.DataFrame | None,
                 config: ModelConfig, query_time: str) -> TrainingSet:
    """The training rows of ``train``; each query is the user's engagement sequence in
    ``history`` (label rows) before the row's query time (``label_history_rows``), unless the
    rows carry their own sequence (a feature table joined point in time), which is used as it
    is (``joined_rows``)."""
    if carries_sequence(train):
        return joined_rows(train, catalog, config)
    return label_history_rows(train, history, catalog, config, query_time)
