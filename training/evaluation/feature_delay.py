"""Queries that see the user's features late: the history a scorer sees is what a feature
pipeline ``delay`` seconds behind would hold at the query's time (pure, no I/O).

``delayed_scorer(scorer, index, delay)`` wraps any point-in-time ``Scorer``: each query's
visible engagements end at the last one strictly before ``as_of - delay`` (``FROZEN``: before
the split time T, the static protocol's state), while ``as_of`` itself, and so the ages of
the engagements it still sees, stay the query's own time. The ranking's exclusions are left
to the protocol (the items engaged before the query's time), so only the features are late.
"""

from __future__ import annotations

import numpy as np

from training.evaluation.protocol import Scorer
from training.history import HistoryIndex, QueryBatch

#: the delay that stands for "features frozen at T"
FROZEN = float("inf")


def delayed_batch(batch: QueryBatch, index: HistoryIndex, delay: float, cut: float) -> QueryBatch:
    """``batch`` with each query's history cut at ``as_of - delay`` (or at ``cut`` if FROZEN)."""
    seen_until = np.full(len(batch), cut) if delay == FROZEN else batch.as_of - delay
    end = np.minimum(batch.end, index.end(batch.user, seen_until))
    return QueryBatch(batch.inter, batch.user, batch.item, batch.as_of, batch.start, np.maximum(end, batch.start))


def delayed_scorer(scorer: Scorer, index: HistoryIndex, delay: float, cut: float) -> Scorer:
    if delay < 0:
        raise ValueError(f"a feature delay is not negative, got {delay}")

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        return scorer(delayed_batch(batch, index, delay, cut), task)

    return score


def delay_label(delay: float) -> str:
    if delay == FROZEN:
        return "frozen at T"
    for unit, seconds in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if delay >= seconds and delay % seconds == 0:
            return f"{int(delay // seconds)} {unit}"
    return f"{delay:g} s"
