"""The point-in-time retrieval protocol (DESIGN.md, "How retrieval quality is measured").

The log is split at T (a quantile of engagement time). Every positive of the test period,
(user u, item i, time t), is one query that sees the state as of t: u's engagements strictly
before t and statistics of events strictly before t, nothing at or after t. The whole catalog
is ranked, minus the items u engaged with before t (the positive itself stays findable, so a
repeat stays a fair query); a hit is i in the top K; recall is micro-averaged over positives
and split into users cold at T (no engagement before T) and warm. The static protocol grades
the same positives with every query's state frozen at T.

A scorer is ``scorer(batch, task) -> [len(batch), n_items]`` scores; it may look at the batch's
history (``QueryBatch``) and ``as_of`` times only. Ties are broken by item index.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Callable, Iterator

import numpy as np
import pandas as pd

from training.eval_settings import ProtocolSettings
from training.pit_data import Interactions

TASKS = ("conversion", "engagement")
PROTOCOLS = ("point-in-time", "static")
STATIC_PREFIX = "static_"


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


class HistoryIndex:
    """Finds, for (user, time) pairs, where the user's engagements before that time end."""

    def __init__(self, inter: Interactions):
        eng = inter.engagements
        ts = eng["ts"].to_numpy()
        self.t0 = float(ts.min()) if len(ts) else 0.0
        #: user u's engagement at time s has key u * stride + (s - t0); keys are sorted
        self.stride = (float(ts.max()) - self.t0 if len(ts) else 0.0) + 1.0
        self.keys = eng["user"].to_numpy(np.float64) * self.stride + (ts - self.t0)
        self.offsets = inter.user_offsets

    def end(self, user: np.ndarray, as_of: np.ndarray) -> np.ndarray:
        """Row after the last engagement of ``user`` strictly before ``as_of``."""
        clipped = np.clip(as_of - self.t0, -0.5, self.stride - 0.5)
        probe = user.astype(np.float64) * self.stride + clipped
        # clipping keeps the probe inside the user's key range; an exact tie stays excluded
        return np.clip(np.searchsorted(self.keys, probe, side="left"), self.offsets[user], self.offsets[user + 1])


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
                 protocol: str = "point-in-time") -> Queries:
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
    as_of = t if protocol == "point-in-time" else np.full(len(t), cut)
    return Queries(task, protocol, user, pos["item"].to_numpy(np.int64), as_of, ~np.isin(user, warm_users))


@dataclass(frozen=True)
class QueryBatch:
    """Queries and their visible history: engagement rows ``start[q]:end[q]`` (time order)."""

    inter: Interactions
    user: np.ndarray
    item: np.ndarray
    as_of: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return len(self.user)

    @cached_property
    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """(query of each visible engagement, its row in ``inter.engagements``)."""
        lengths = self.end - self.start
        query = np.repeat(np.arange(len(self)), lengths)
        first = np.repeat(self.start - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
        return query, first + np.arange(lengths.sum())

    def history_matrix(self, last_n: int | None = None) -> np.ndarray:
        """[queries, items] 1.0 where the item is in the visible history (its last ``last_n``
        engagements only, if given)."""
        query, row = self.flat
        if last_n is not None:
            keep = row >= np.maximum(self.end - last_n, self.start)[query]
            query, row = query[keep], row[keep]
        out = np.zeros((len(self), self.inter.n_items), dtype=np.float32)
        out[query, self.inter.engagements["item"].to_numpy()[row]] = 1.0
        return out

    def last_items(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The last ``n`` visible engagements, oldest first, right-aligned: (item [q, n] with
        -1 for padding, age at ``as_of`` in seconds, dwell ms), padding 0."""
        eng = self.inter.engagements
        first = np.maximum(self.end - n, self.start)
        slot = np.arange(n)[None, :] - (n - (self.end - first))[:, None]  # index from first
        valid = slot >= 0
        rows = np.where(valid, first[:, None] + slot, 0)
        items = np.where(valid, eng["item"].to_numpy()[rows], -1)
        age = np.where(valid, self.as_of[:, None] - eng["ts"].to_numpy()[rows], 0.0)
        dwell = np.where(valid, eng["dwell_ms"].to_numpy()[rows], 0.0)
        return items, age, dwell


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


def metric_name(task: str, k: int, protocol: str = "point-in-time", group: str = "") -> str:
    prefix = STATIC_PREFIX if protocol == "static" else ""
    return f"{prefix}{task}_recall@{k}" + (f"_{group}" if group else "")


def recall_metrics(ranks: np.ndarray, queries: Queries, ks: tuple[int, ...]) -> dict[str, float]:
    """Micro recall@K over all queries and over cold / warm users."""
    out: dict[str, float] = {}
    for group, mask in (("", np.ones(len(ranks), bool)), ("cold", queries.cold), ("warm", ~queries.cold)):
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

    def evaluate(self, scorer: Scorer, settings: ProtocolSettings) -> dict[str, float]:
        return self.metrics(self.ranks(scorer, settings), settings)
