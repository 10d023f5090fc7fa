"""The point-in-time retrieval protocol (DESIGN.md, "How retrieval quality is measured").

The log is split at T (a quantile of engagement time). Every positive of the test period,
(user u, item i, time t), is one query that sees the state as of t: u's engagements strictly
before t and statistics of events strictly before t, nothing at or after t. The whole catalog
is ranked, minus the items u engaged with before t (the positive itself stays findable, so a
repeat stays a fair query); a hit is i in the top K; recall is micro-averaged over positives
and split into users cold at T (no engagement before T) and warm. The static protocol grades
the same positives with every query's state frozen at T.

A scorer is ``scorer(batch, task) -> [len(batch), n_items]`` scores; it may look at the batch's
history (``training.history.QueryBatch``) and ``as_of`` times only. Ties are broken by item index;
``training.evaluation.scoring.grade`` grades one.

This module is the one place metric names are made (``metric_name``): every report, gate and
experiment names its figures through it, the headline first (``HEADLINE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from training.evaluation.settings import ProtocolSettings
from training.history import HistoryIndex, Interactions, QueryBatch

TASKS = ("conversion", "engagement")
POINT_IN_TIME, STATIC = "point-in-time", "static"
#: the point-in-time protocol and the static one, its named second column
PROTOCOLS = (POINT_IN_TIME, STATIC)
STATIC_PREFIX = "static_"
#: user groups a recall is also split into: cold at the split (no engagement before it), warm
GROUPS = ("cold", "warm")


def metric_name(task: str, k: int, protocol: str = POINT_IN_TIME, group: str = "") -> str:
    """The name of a recall figure: ``conversion_recall@100``, ``static_conversion_recall@100``,
    ``conversion_recall@100_cold``; the only place such a name is spelt."""
    prefix = STATIC_PREFIX if protocol == STATIC else ""
    return f"{prefix}{task}_recall@{k}" + (f"_{group}" if group else "")


def queries_name(task: str) -> str:
    """The name of a query count: ``conversion_queries``."""
    return f"{task}_queries"


#: K of the headline figure
HEADLINE_K = 100
#: the headline figure: point-in-time conversion recall@100 (the gate, early stopping, the
#: validation choices of the baselines, the reports' first column)
HEADLINE = metric_name("conversion", HEADLINE_K)
#: the baselines graded beside the models (``training.evaluation.baselines``), in report order
BASELINES = ("popularity", "recent_popularity", "item_knn", "ease")
#: the figures ``convcg eval`` reports
REPORTED_METRICS = (metric_name("conversion", 20), HEADLINE, metric_name("conversion", 1000),
                    metric_name("engagement", HEADLINE_K), metric_name("conversion", HEADLINE_K, group="cold"),
                    metric_name("conversion", HEADLINE_K, group="warm"),
                    metric_name("conversion", HEADLINE_K, STATIC))


def split_time(inter: Interactions, quantile: float, before: float = np.inf) -> float:
    """The ``quantile`` of the engagement times (of those before ``before``), an actual event time."""
    ts = inter.engagements["ts"].to_numpy()
    return float(np.quantile(ts[ts < before], quantile, method="lower"))


def task_positives(inter: Interactions, task: str) -> pd.DataFrame:
    """user, item, ts of every positive of ``task`` (conversions at their attributed click)."""
    if task == "conversion":
        return inter.conversions[["user", "item", "ts"]]
    if task == "engagement":
        return inter.engagements[["user", "item", "ts"]]
    raise ValueError(f"unknown task {task!r} (want one of {TASKS})")


@dataclass(frozen=True)
class Queries:
    """One query per positive: its user, item, the time of the state it sees, cold at T."""

    task: str
    protocol: str
    user: np.ndarray
    item: np.ndarray
    as_of: np.ndarray
    cold: np.ndarray

    def __len__(self) -> int:
        return len(self.user)


def make_queries(inter: Interactions, task: str, cut: float, end: float = np.inf,
                 protocol: str = POINT_IN_TIME) -> Queries:
    """The positives of ``task`` with time in [cut, end); PIT queries see the state as of their
    own time, static ones the state as of ``cut``."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r} (want one of {PROTOCOLS})")
    pos = task_positives(inter, task)
    pos = pos[(pos["ts"] >= cut) & (pos["ts"] < end)]
    eng = inter.engagements
    warm_users = np.unique(eng.loc[eng["ts"] < cut, "user"].to_numpy())
    user = pos["user"].to_numpy(np.int64)
    t = pos["ts"].to_numpy(np.float64)
    as_of = t if protocol == POINT_IN_TIME else np.full(len(t), cut)
    return Queries(task, protocol, user, pos["item"].to_numpy(np.int64), as_of, ~np.isin(user, warm_users))


Scorer = Callable[[QueryBatch, str], np.ndarray]


def query_batches(inter: Interactions, queries: Queries, batch_size: int,
                  index: HistoryIndex | None = None) -> Iterator[QueryBatch]:
    index = index or HistoryIndex(inter)
    ends = index.end(queries.user, queries.as_of)
    starts = inter.user_offsets[queries.user]
    for s in range(0, len(queries), batch_size):
        sl = slice(s, s + batch_size)
        yield QueryBatch(inter, queries.user[sl], queries.item[sl], queries.as_of[sl], starts[sl], ends[sl])


def target_ranks(scores: np.ndarray, batch: QueryBatch) -> np.ndarray:
    """0-based rank of each query's positive among the items not excluded (ties by index)."""
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    rows = np.arange(len(batch))
    allowed = batch.history_matrix() == 0
    allowed[rows, batch.item] = True
    target = scores[rows, batch.item][:, None]
    ahead = (scores > target) | ((scores == target) & (np.arange(scores.shape[1]) < batch.item[:, None]))
    return (ahead & allowed).sum(axis=1)


def rank_queries(scorer: Scorer, inter: Interactions, queries: Queries, batch_size: int,
                 index: HistoryIndex | None = None) -> np.ndarray:
    index = index or HistoryIndex(inter)
    ranks = [target_ranks(scorer(b, queries.task), b) for b in query_batches(inter, queries, batch_size, index)]
    return np.concatenate(ranks) if ranks else np.zeros(0, dtype=np.int64)


def recall_metrics(ranks: np.ndarray, queries: Queries, ks: tuple[int, ...]) -> dict[str, float]:
    """Micro recall@K over all queries and over cold / warm users."""
    out: dict[str, float] = {}
    for group, mask in (("", np.ones(len(ranks), bool)), (GROUPS[0], queries.cold), (GROUPS[1], ~queries.cold)):
        for k in ks:
            hits = ranks[mask] < k
            out[metric_name(queries.task, k, queries.protocol, group)] = float(hits.mean()) if len(hits) else float("nan")
    return out


@dataclass(frozen=True)
class EvaluationSet:
    """All query sets of one split (both tasks, both protocols) and their history index."""

    inter: Interactions
    cut: float
    end: float
    queries: dict[tuple[str, str], Queries]
    index: HistoryIndex

    @classmethod
    def build(cls, inter: Interactions, cut: float, end: float = np.inf,
              tasks: tuple[str, ...] = TASKS, protocols: tuple[str, ...] = PROTOCOLS) -> "EvaluationSet":
        queries = {(t, p): make_queries(inter, t, cut, end, p) for t in tasks for p in protocols}
        return cls(inter, cut, end, queries, HistoryIndex(inter))

    def ranks(self, scorer: Scorer, settings: ProtocolSettings) -> dict[tuple[str, str], np.ndarray]:
        return {key: rank_queries(scorer, self.inter, q, settings.batch_size, self.index)
                for key, q in self.queries.items()}

    def metrics(self, ranks: dict[tuple[str, str], np.ndarray], settings: ProtocolSettings) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, r in ranks.items():
            out.update(recall_metrics(r, self.queries[key], settings.ks))
        return out
