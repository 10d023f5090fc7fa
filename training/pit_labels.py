"""The point-in-time protocol over label rows: what the trainer sees (pure, no I/O).

The trainer has no event log, only labels (``convcg.contract.Label``). They carry what the
protocol needs: an ``engagement`` label is an engagement at its ``label_ts`` (its dwell is
recovered from ``engagement_weight`` = 1 + log1p(dwell seconds), exact below the weight's
cap, the cap's dwell above it); a ``conversion`` / ``correction`` label is a conversion known at
its ``label_ts``, attributed to its impression's click (the impression's engagement label)
or, without one, to the user's last engagement of the item before it (``pit_data``).

``heldout_evaluation`` makes one query per held-out positive row, as of its own time
(engagement: its ``label_ts``; conversion: its attributed click), with the history of the
user's engagement labels strictly before that time; the held-out rows are exactly the
queries, so a training row never becomes one. ``label_sequence_examples`` builds the
trainer's examples with the same query inputs (``SequenceFeatures`` over the label history).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.encoding import dense_matrix
from model.config import ModelConfig
from training.catalog_loss import TrainingSet
from training.eval_settings import ProtocolSettings
from training.evaluation import full_catalog
from training.examples import (
    CONVERSION_KINDS,
    ENGAGEMENT_KINDS,
    catalog_from_labels,
    roles_and_weights,
    validate_labels,
)
from training.model_scoring import model_scorer
from training.pit_data import (
    Interactions,
    attribute_conversions,
    interactions_from_frames,
)
from training.pit_protocol import (
    EvaluationSet,
    HistoryIndex,
    Queries,
)
from training.sequence_examples import (
    SequenceFeatures,
    catalog_frame,
    sequence_examples,
)

PROTOCOL = "point-in-time"


def dwell_ms_from_weight(weight: np.ndarray) -> np.ndarray:
    """Inverse of the label join's click-duration weight (1 + log1p(seconds)); 0 for a
    weight of 1 or less (a save, or no weight)."""
    w = np.nan_to_num(np.asarray(weight, dtype=np.float64), nan=1.0)
    return 1000.0 * np.expm1(np.maximum(w - 1.0, 0.0))


def _frames(labels: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(impressions, engagements, conversions) in ``pit_data.interactions_from_frames`` form."""
    kind = labels["kind"].to_numpy()
    eng = labels[np.isin(kind, ENGAGEMENT_KINDS)]
    conv = labels[np.isin(kind, CONVERSION_KINDS)]
    weight = eng["engagement_weight"] if "engagement_weight" in eng.columns else np.ones(len(eng))
    return (
        pd.DataFrame({"item": labels["item_id"].to_numpy(object), "advertiser": labels["advertiser_id"].to_numpy(object)}),
        pd.DataFrame({"impression_id": eng["impression_id"].to_numpy(object), "user": eng["user_id"].to_numpy(object),
                      "item": eng["item_id"].to_numpy(object), "ts": eng["label_ts"].to_numpy(np.float64),
                      "dwell_ms": dwell_ms_from_weight(weight)}),
        pd.DataFrame({"impression_id": conv["impression_id"].to_numpy(object), "user": conv["user_id"].to_numpy(object),
                      "item": conv["item_id"].to_numpy(object), "advertiser": conv["advertiser_id"].to_numpy(object),
                      "known_ts": conv["label_ts"].to_numpy(np.float64)}),
    )


def interactions_from_labels(labels: pd.DataFrame, catalog: pd.DataFrame | None = None) -> Interactions:
    """The engagements and conversions of label rows (negatives only add their items), over
    ``catalog`` (item_id, advertiser_id, category) plus every labelled item."""
    return interactions_from_frames(catalog, *_frames(labels))


def item_frame(inter: Interactions, catalog: pd.DataFrame | None) -> pd.DataFrame:
    """The items the model ranks, in ``inter``'s order: id, advertiser and category of
    ``inter``, price from ``catalog`` (unknown: 0, as the trainer encodes it)."""
    items = catalog_frame(inter)
    if catalog is not None and "price" in catalog.columns and len(catalog):
        price = catalog.drop_duplicates("item_id").set_index("item_id")["price"]
        items["price"] = pd.to_numeric(items["item_id"].map(price), errors="coerce").fillna(0.0).to_numpy()
    return items


def _indices(inter: Interactions, users, items) -> tuple[np.ndarray, np.ndarray]:
    user = pd.Series(np.arange(inter.n_users), index=inter.user_ids).reindex(users).to_numpy()
    item = pd.Series(np.arange(inter.n_items), index=inter.item_ids).reindex(items).to_numpy()
    return user.astype(np.int64), item.astype(np.int64)


def heldout_queries(inter: Interactions, labels: pd.DataFrame, heldout: pd.DataFrame, task: str,
                    cold_before: float) -> Queries:
    """One PIT query per held-out positive row of ``task`` (``inter`` is built from
    ``labels``, which include ``heldout``); cold = no engagement before ``cold_before``."""
    _, eng, conv = _frames(heldout)
    if task == "engagement":
        pos = eng.drop_duplicates(["impression_id", "item"]).assign(as_of=lambda f: f["ts"])
    else:
        _, all_eng, _ = _frames(labels)
        pos = conv.assign(as_of=attribute_conversions(conv, all_eng).fillna(conv["known_ts"]).to_numpy())
    user, item = _indices(inter, pos["user"].to_numpy(object), pos["item"].to_numpy(object))
    e = inter.engagements
    warm = np.unique(e.loc[e["ts"] < cold_before, "user"].to_numpy())
    as_of = pos["as_of"].to_numpy(np.float64)
    order = np.lexsort((item, user, as_of))
    return Queries(task, PROTOCOL, user[order], item[order], as_of[order], ~np.isin(user[order], warm))


def heldout_evaluation(history: pd.DataFrame, heldout: pd.DataFrame,
                       catalog: pd.DataFrame | None) -> EvaluationSet:
    """The PIT queries of the held-out label rows (both tasks), over the interactions of
    all the labels and the catalog plus every labelled item."""
    labels = pd.concat([history, heldout], ignore_index=True)
    inter = interactions_from_labels(labels, catalog if catalog is not None else catalog_from_labels(labels))
    cut = float(heldout["impression_ts"].min()) if len(heldout) else np.inf
    queries = {(task, PROTOCOL): heldout_queries(inter, labels, heldout, task, cut)
               for task in ("conversion", "engagement")}
    return EvaluationSet(inter, cut, np.inf, queries, HistoryIndex(inter))


def pit_model_metrics(model, evaluation: EvaluationSet, catalog: pd.DataFrame | None,
                      ks: tuple[int, ...], batch_size: int = 1024) -> dict[str, float]:
    """PIT recall@``ks`` of ``model`` on ``evaluation`` (both tasks, all / cold / warm)."""
    scorer = model_scorer(model, SequenceFeatures(evaluation.inter, model.config),
                          item_frame(evaluation.inter, catalog))
    return evaluation.evaluate(scorer, ProtocolSettings(ks=ks, batch_size=batch_size))


def label_sequence_examples(train: pd.DataFrame, history: pd.DataFrame, catalog: pd.DataFrame | None,
                            config: ModelConfig, query_time: str = "engagement") -> TrainingSet:
    """Training rows of label rows whose queries are built like the point-in-time
    evaluation's (``SequenceFeatures``): the user's last engagements in ``history`` (label
    rows, usually ``train`` plus older ones) strictly before each row's query time, with
    their ages and dwells; ``user__*`` feature columns of the rows stay the dense inputs.
    The softmax's catalog is the catalog plus every labelled item, in the interactions'
    order, so each row's visible history can be masked out of it."""
    validate_labels(train)
    everything = full_catalog(catalog, pd.concat([history, train], ignore_index=True))
    features = SequenceFeatures(interactions_from_labels(history, everything), config)
    items = item_frame(features.inter, everything)
    rows = sequence_examples(train, features, items, query_time)
    role, _ = roles_and_weights(train)
    rows.examples.queries.dense = torch.from_numpy(dense_matrix(train[role >= 0], config.user_features))
    return TrainingSet(rows, items)
