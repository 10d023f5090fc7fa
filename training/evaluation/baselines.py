"""Simple retrievers graded by the point-in-time protocol, each fit on the events before a
cut time and scoring a ``QueryBatch`` (see ``training.evaluation.protocol``):

* popularity: positives of the task per item before the cut;
* recent popularity: positives of the task per item in the window before each query's time;
* item-kNN: cosine similarity of items' user sets before the cut, summed over the user's
  last engaged items as of the query (how many: chosen on the validation slice);
* EASE (Steck 2019): the closed-form item-item model on the user x item engagement matrix
  before the cut, applied to the user's whole history as of the query (lambda chosen on the
  validation slice).

Item-kNN and EASE break ties (a user with no history scores every item 0) by the task's
popularity before the cut, scaled far below any real score difference.

Conversion statistics count a conversion only once its event has arrived (``known_ts``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from training.evaluation.protocol import HEADLINE, POINT_IN_TIME, EvaluationSet, Scorer, split_time
from training.evaluation.scoring import grade
from training.evaluation.settings import BaselineSettings, ProtocolSettings
from training.history import Interactions, QueryBatch


def _task_events(inter: Interactions, task: str) -> tuple[np.ndarray, np.ndarray]:
    """(item, time the event is known) of every positive of ``task``."""
    if task == "conversion":
        c = inter.conversions
        return c["item"].to_numpy(), c["known_ts"].to_numpy()
    e = inter.engagements
    return e["item"].to_numpy(), e["ts"].to_numpy()


#: the validation choices maximise the headline figure
VALIDATION_METRIC = HEADLINE
#: weight of the popularity tie-break relative to the most popular item's count
TIE_BREAK_SCALE = 1e-6


def popularity_counts(inter: Interactions, cut: float) -> dict[str, np.ndarray]:
    """task -> [n_items] positives of the task known before ``cut``."""
    counts = {}
    for task in ("conversion", "engagement"):
        items, ts = _task_events(inter, task)
        counts[task] = np.bincount(items[ts < cut], minlength=inter.n_items).astype(np.float64)
    return counts


def tie_break(inter: Interactions, cut: float) -> dict[str, np.ndarray]:
    return {task: TIE_BREAK_SCALE * c / max(c.max(), 1.0) for task, c in popularity_counts(inter, cut).items()}


def popularity(inter: Interactions, cut: float) -> Scorer:
    counts = popularity_counts(inter, cut)

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        return np.broadcast_to(counts[task], (len(batch), inter.n_items))

    return score


class WindowCounts:
    """Per item, the number of events with time in [t - window, t), for many t at once."""

    def __init__(self, items: np.ndarray, ts: np.ndarray, n_items: int, window: float):
        order = np.lexsort((ts, items))
        self.t0 = float(ts.min()) - window - 1.0 if len(ts) else 0.0
        self.stride = (float(ts.max()) - self.t0 + 2 * window + 2.0) if len(ts) else 1.0
        self.keys = items[order] * self.stride + (ts[order] - self.t0)
        self.base = np.arange(n_items) * self.stride
        self.window = window

    def at(self, t: np.ndarray) -> np.ndarray:
        """[len(t), n_items] counts strictly before each t and at or after t - window."""
        rel = np.clip(t - self.t0, self.window, self.stride - 1.0)[:, None]
        upper = np.searchsorted(self.keys, self.base[None, :] + rel, side="left")
        lower = np.searchsorted(self.keys, self.base[None, :] + rel - self.window, side="left")
        return (upper - lower).astype(np.float64)


def recent_popularity(inter: Interactions, window_s: float) -> Scorer:
    windows = {task: WindowCounts(*_task_events(inter, task), inter.n_items, window_s)
               for task in ("conversion", "engagement")}

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        return windows[task].at(batch.as_of)

    return score


def engagement_matrix(inter: Interactions, cut: float) -> np.ndarray:
    """[users, items] 1.0 where the user engaged with the item before ``cut``."""
    e = inter.engagements
    e = e[e["ts"] < cut]
    x = np.zeros((inter.n_users, inter.n_items), dtype=np.float64)
    x[e["user"].to_numpy(), e["item"].to_numpy()] = 1.0
    return x


def item_knn(inter: Interactions, cut: float, last_items: int) -> Scorer:
    x = engagement_matrix(inter, cut)
    co = x.T @ x
    norm = np.sqrt(np.diag(co))
    sim = co / np.maximum(np.outer(norm, norm), 1e-12)
    np.fill_diagonal(sim, 0.0)
    ties = tie_break(inter, cut)

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        return batch.history_matrix(last_items) @ sim + ties[task]

    return score


def ease_weights(x: np.ndarray, lam: float) -> np.ndarray:
    """B = I - P / diag(P), P = (X'X + lam I)^-1 (zero diagonal)."""
    gram = x.T @ x
    gram[np.diag_indices_from(gram)] += lam
    p = np.linalg.inv(gram)
    b = -p / np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


def ease(inter: Interactions, cut: float, lam: float) -> Scorer:
    b = ease_weights(engagement_matrix(inter, cut), lam)
    ties = tie_break(inter, cut)

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        return batch.history_matrix() @ b + ties[task]

    return score


def validation_set(inter: Interactions, cut: float, protocol: ProtocolSettings,
                   task: str = "conversion") -> tuple[float, EvaluationSet]:
    """(validation cut, PIT queries of ``task`` in [validation cut, cut)): the end of the
    training period, never the test slice."""
    val_cut = split_time(inter, 1.0 - protocol.validation_share, before=cut)
    return val_cut, EvaluationSet.build(inter, val_cut, cut, tasks=(task,), protocols=(POINT_IN_TIME,))


def choose_on_validation(make: Callable[[float, object], Scorer], grid: tuple, inter: Interactions, cut: float,
                         protocol: ProtocolSettings, metric: str = VALIDATION_METRIC) -> tuple[object, dict]:
    """The grid value whose scorer ``make(val_cut, value)`` has the best validation
    ``metric`` (ties: the first), and every value's score."""
    val_cut, val = validation_set(inter, cut, protocol)
    scores = {value: grade(val, make(val_cut, value), protocol)[metric] for value in grid}
    return max(grid, key=lambda v: scores[v]), {str(k): v for k, v in scores.items()}


def baseline_scorers(inter: Interactions, cut: float, settings: BaselineSettings,
                     protocol: ProtocolSettings) -> tuple[dict[str, Scorer], dict]:
    """name -> scorer fit before ``cut``, and what was chosen on validation."""
    lam, ease_tried = choose_on_validation(lambda c, v: ease(inter, c, v), settings.ease_lambdas,
                                           inter, cut, protocol)
    last, knn_tried = choose_on_validation(lambda c, v: item_knn(inter, c, v), settings.knn_last_items,
                                           inter, cut, protocol)
    scorers = {
        "popularity": popularity(inter, cut),
        "recent_popularity": recent_popularity(inter, settings.recent_window_s),
        "item_knn": item_knn(inter, cut, last),
        "ease": ease(inter, cut, lam),
    }
    return scorers, {"ease_lambda": lam, "ease_validation": ease_tried,
                     "knn_last_items": last, "knn_validation": knn_tried}
