"""Offline retrieval evaluation: recall@K on a time-ordered held-out slice.

Queries are (user, surface) pairs that have positives in the held-out slice, with the
user's state as of the split (recent engaged items from the history only). Items the user
already engaged with in the history are excluded from retrieval. Recall is micro-averaged:
retrieved held-out (query, item) positives / all of them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from model.encoding import USER_PREFIX
from training.examples import CONVERSION_KINDS, ENGAGEMENT_KINDS, catalog_from_labels

TASK_KINDS = {"conversion": CONVERSION_KINDS, "engagement": ENGAGEMENT_KINDS}
POSITIVE_KINDS = CONVERSION_KINDS + ENGAGEMENT_KINDS
#: metric names reported everywhere (registry metrics, gate, eval table)
DEFAULT_METRICS = (("conversion", 100), ("conversion", 1000), ("engagement", 100))


def metric_name(task: str, k: int) -> str:
    return f"{task}_recall@{k}"


def recall_at_k(scores: np.ndarray, positives: Sequence[np.ndarray], k: int,
                exclude: Sequence[np.ndarray] | None = None) -> float:
    """Micro recall@k: sum over queries of |top-k ∩ positives| / sum of |positives|.

    ``scores`` is ``[queries, items]``; ``positives[q]`` and ``exclude[q]`` are column
    indices. Excluded columns can never be retrieved."""
    scores = np.array(scores, dtype=np.float64, copy=True)
    total = sum(len(p) for p in positives)
    if total == 0:
        return float("nan")
    if exclude is not None:
        for q, cols in enumerate(exclude):
            if len(cols):
                scores[q, np.asarray(cols, dtype=np.int64)] = -np.inf
    n_items = scores.shape[1]
    if k >= n_items:
        top = np.argsort(-scores, axis=1)
    else:
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    hits = 0
    for q, pos in enumerate(positives):
        if len(pos):
            valid = top[q][np.isfinite(scores[q, top[q]])]
            hits += len(np.intersect1d(valid, np.asarray(pos)))
    return hits / total


def full_catalog(catalog: pd.DataFrame | None, labels: pd.DataFrame) -> pd.DataFrame:
    """The catalog plus any labelled item missing from it (so every positive is findable)."""
    from_labels = catalog_from_labels(labels)
    if catalog is None or len(catalog) == 0:
        return from_labels
    missing = from_labels[~from_labels["item_id"].isin(catalog["item_id"])]
    return pd.concat([catalog, missing], ignore_index=True) if len(missing) else catalog.reset_index(drop=True)


def evaluation_queries(history: pd.DataFrame, heldout: pd.DataFrame, catalog: pd.DataFrame, task: str,
                       recent_k: int = 10) -> tuple[pd.DataFrame, list[np.ndarray], list[np.ndarray]]:
    """(query frame, positive columns per query, excluded columns per query)."""
    index = pd.Series(np.arange(len(catalog)), index=catalog["item_id"].to_numpy())
    index = index[~index.index.duplicated()]
    pos = heldout[heldout["kind"].isin(TASK_KINDS[task])]
    engaged = history[history["kind"].isin(POSITIVE_KINDS)].sort_values("label_ts", kind="stable")
    seen = engaged.groupby("user_id")["item_id"].agg(lambda s: index.reindex(s.unique()).dropna().to_numpy(np.int64))
    recent = (engaged[engaged["kind"].isin(ENGAGEMENT_KINDS)].groupby("user_id")["item_id"]
              .agg(lambda s: list(dict.fromkeys(reversed(s.tolist())))[:recent_k]))
    user_cols = [c for c in heldout.columns if c.startswith(USER_PREFIX)]
    rows, positives, exclude = [], [], []
    for (user, surface), group in pos.groupby(["user_id", "surface"], sort=True):
        cols = index.reindex(group["item_id"].unique()).dropna().to_numpy(np.int64)
        if not len(cols):
            continue
        first = group.iloc[0]
        row = {"user_id": user, "surface": surface, "recent_items": recent.get(user, [])}
        row.update({c: first[c] for c in user_cols})
        rows.append(row)
        positives.append(cols)
        exclude.append(np.setdiff1d(seen.get(user, np.zeros(0, np.int64)), cols))
    return pd.DataFrame(rows), positives, exclude


ScoreFn = Callable[[pd.DataFrame, str], np.ndarray]


def evaluate_scorer(score_fn: ScoreFn, history: pd.DataFrame, heldout: pd.DataFrame, catalog: pd.DataFrame,
                    metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS, recent_k: int = 10) -> dict[str, float]:
    """Recall metrics of a scorer ``score_fn(query_frame, task) -> [queries, items]``.

    Note: items the user engaged with in the history are excluded, except when they are a
    held-out positive again (a repeat purchase stays findable)."""
    out: dict[str, float] = {}
    for task in sorted({t for t, _ in metrics}):
        queries, positives, exclude = evaluation_queries(history, heldout, catalog, task, recent_k)
        out[f"{task}_queries"] = float(len(queries))
        scores = score_fn(queries, task) if len(queries) else np.zeros((0, len(catalog)))
        for t, k in metrics:
            if t == task:
                out[metric_name(task, k)] = recall_at_k(scores, positives, k, exclude)
    return out


def model_scorer(model, catalog: pd.DataFrame) -> ScoreFn:
    from model.inference import embed_items, embed_query_frame

    item_emb = {task: embed_items(model, catalog, task=task) for task in ("conversion", "engagement")}

    def score(queries: pd.DataFrame, task: str) -> np.ndarray:
        return embed_query_frame(model, queries, task=task) @ item_emb[task].T

    return score


def popularity_scorer(history: pd.DataFrame, catalog: pd.DataFrame) -> ScoreFn:
    """The same ranking for everyone: count of positives per item in the history, per task."""

    def score(queries: pd.DataFrame, task: str) -> np.ndarray:
        kinds = TASK_KINDS[task]
        counts = history[history["kind"].isin(kinds)]["item_id"].value_counts()
        item_score = catalog["item_id"].map(counts).fillna(0).to_numpy(np.float64)
        return np.tile(item_score, (len(queries), 1))

    return score


def evaluate_model(model, history: pd.DataFrame, heldout: pd.DataFrame, catalog: pd.DataFrame | None,
                   metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS) -> dict[str, float]:
    cat = full_catalog(catalog, pd.concat([history, heldout]))
    return evaluate_scorer(model_scorer(model, cat), history, heldout, cat, metrics,
                           recent_k=max(model.config.recent_items, 1))
