"""The held-out evaluation of the trainer's quality gate: the point-in-time protocol over label
rows (pure, no I/O).

The trainer has no event log, only labels; their history is ``training.history.
interactions_from_labels``. ``heldout_evaluation`` makes one query per held-out positive row,
as of its own time (engagement: its ``label_ts``; conversion: its attributed click), with the
history of the user's engagement labels strictly before that time; the held-out rows are exactly
the queries, so a training row never becomes one. The same positives are also asked as of the
split (the static protocol, the second, ``static_``-named column). The trainer's training rows
are built with the same query inputs (``training.learn.rows.label_history_rows``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from training.evaluation.protocol import (
    HEADLINE_K,
    POINT_IN_TIME,
    PROTOCOLS,
    TASKS,
    EvaluationSet,
    Queries,
    queries_name,
)
from training.evaluation.scoring import Ranks, grade_with_ranks, model_scorer
from training.evaluation.settings import ProtocolSettings
from training.history import (
    HistoryIndex,
    Interactions,
    attribute_conversions,
    interactions_from_labels,
    label_frames,
)
from training.learn.examples import catalog_from_labels
from training.learn.sequences import SequenceFeatures, item_frame

#: recall cut-offs of the held-out metrics besides the gate's K
HELDOUT_KS = (1000,)


def _indices(inter: Interactions, users, items) -> tuple[np.ndarray, np.ndarray]:
    user = pd.Series(np.arange(inter.n_users), index=inter.user_ids).reindex(users).to_numpy()
    item = pd.Series(np.arange(inter.n_items), index=inter.item_ids).reindex(items).to_numpy()
    return user.astype(np.int64), item.astype(np.int64)


def heldout_queries(inter: Interactions, labels: pd.DataFrame, heldout: pd.DataFrame, task: str,
                    cold_before: float, protocol: str = POINT_IN_TIME) -> Queries:
    """One query per held-out positive row of ``task`` (``inter`` is built from ``labels``,
    which include ``heldout``); cold = no engagement before ``cold_before``. A point-in-time
    query sees the state as of its own time, a static one the state as of ``cold_before`` (the
    split)."""
    _, eng, conv = label_frames(heldout)
    if task == "engagement":
        pos = eng.drop_duplicates(["impression_id", "item"]).assign(as_of=lambda f: f["ts"])
    else:
        _, all_eng, _ = label_frames(labels)
        pos = conv.assign(as_of=attribute_conversions(conv, all_eng).fillna(conv["known_ts"]).to_numpy())
    user, item = _indices(inter, pos["user"].to_numpy(object), pos["item"].to_numpy(object))
    e = inter.engagements
    warm = np.unique(e.loc[e["ts"] < cold_before, "user"].to_numpy())
    as_of = pos["as_of"].to_numpy(np.float64)
    order = np.lexsort((item, user, as_of))
    seen_at = as_of[order] if protocol == POINT_IN_TIME else np.full(len(order), cold_before)
    return Queries(task, protocol, user[order], item[order], seen_at, ~np.isin(user[order], warm))


def heldout_evaluation(history: pd.DataFrame, heldout: pd.DataFrame,
                       catalog: pd.DataFrame | None) -> EvaluationSet:
    """The queries of the held-out label rows (both tasks, both protocols), over the
    interactions of all the labels and the catalog plus every labelled item."""
    labels = pd.concat([history, heldout], ignore_index=True)
    inter = interactions_from_labels(labels, catalog if catalog is not None else catalog_from_labels(labels))
    cut = float(heldout["impression_ts"].min()) if len(heldout) else np.inf
    queries = {(task, protocol): heldout_queries(inter, labels, heldout, task, cut, protocol)
               for task in TASKS for protocol in PROTOCOLS}
    return EvaluationSet(inter, cut, np.inf, queries, HistoryIndex(inter))


def model_metrics_and_ranks(model, evaluation: EvaluationSet, catalog: pd.DataFrame | None,
                            ks: tuple[int, ...], batch_size: int = 1024) -> tuple[dict[str, float], Ranks]:
    """Recall@``ks`` of ``model`` on ``evaluation`` (``scoring.grade``: each task and protocol,
    all / cold / warm users), and each query's rank (for a paired comparison)."""
    scorer = model_scorer(model, SequenceFeatures(evaluation.inter, model.config),
                          item_frame(evaluation.inter, catalog))
    return grade_with_ranks(evaluation, scorer, ProtocolSettings(ks=ks, batch_size=batch_size))


def model_metrics(model, evaluation: EvaluationSet, catalog: pd.DataFrame | None,
                  ks: tuple[int, ...], batch_size: int = 1024) -> dict[str, float]:
    """``model_metrics_and_ranks``' figures."""
    return model_metrics_and_ranks(model, evaluation, catalog, ks, batch_size)[0]


def heldout_metrics_and_ranks(model, evaluation: EvaluationSet, catalog: pd.DataFrame | None,
                              k: int = HEADLINE_K) -> tuple[dict[str, float], Ranks]:
    """What the gate compares and the registry keeps: ``model_metrics`` at ``k`` and
    ``HELDOUT_KS``, and the number of point-in-time queries of each task; with the ranks."""
    out, ranks = model_metrics_and_ranks(model, evaluation, catalog, tuple(sorted({k, *HELDOUT_KS})))
    out.update({queries_name(task): float(len(q)) for (task, protocol), q in evaluation.queries.items()
                if protocol == POINT_IN_TIME})
    return out, ranks


def heldout_metrics(model, evaluation: EvaluationSet, catalog: pd.DataFrame | None,
                    k: int = HEADLINE_K) -> dict[str, float]:
    """``heldout_metrics_and_ranks``' figures."""
    return heldout_metrics_and_ranks(model, evaluation, catalog, k)[0]
