"""Paired bootstrap over test users: is model A's recall really above model B's on the same
queries? (pure numpy)

Queries of one user are not independent (the same history, the same tastes), so the unit
resampled is the user: each replicate draws users with replacement and recomputes both
models' micro recall over the drawn users' queries. The 95% interval of the difference A - B
decides a direction: above 0 it is reproduced, below 0 reversed, else within the noise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

REPRODUCED, REVERSED, WITHIN_NOISE = "reproduced", "reversed", "not reproduced (within noise)"


@dataclass(frozen=True)
class PairedDifference:
    difference: float  # recall(A) - recall(B) on all queries
    low: float         # 2.5% quantile of the bootstrap differences
    high: float        # 97.5% quantile
    users: int
    queries: int

    @property
    def verdict(self) -> str:
        if self.low > 0:
            return REPRODUCED
        if self.high < 0:
            return REVERSED
        return WITHIN_NOISE

    def as_dict(self) -> dict:
        return {"difference": self.difference, "ci95": [self.low, self.high], "users": self.users,
                "queries": self.queries, "verdict": self.verdict}


def paired_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, users: np.ndarray, replicates: int = 2000,
                     seed: int = 0) -> PairedDifference:
    """``hits_*``: per query, 1 if the positive was found (or the mean over seeds), in the
    same query order for both models; ``users``: each query's user."""
    hits_a, hits_b = np.asarray(hits_a, np.float64), np.asarray(hits_b, np.float64)
    if not (len(hits_a) == len(hits_b) == len(users)) or len(users) == 0:
        raise ValueError("paired bootstrap needs the same non-empty queries for both models")
    unique, user_index = np.unique(users, return_inverse=True)
    n_users = len(unique)
    per_user_a = np.bincount(user_index, hits_a, n_users)
    per_user_b = np.bincount(user_index, hits_b, n_users)
    per_user_n = np.bincount(user_index, minlength=n_users).astype(np.float64)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_users, size=(replicates, n_users))
    counts = np.stack([np.bincount(d, minlength=n_users) for d in draws])  # [replicates, users]
    n = counts @ per_user_n
    diffs = (counts @ per_user_a - counts @ per_user_b) / n
    low, high = np.quantile(diffs, [0.025, 0.975])
    return PairedDifference(float(hits_a.mean() - hits_b.mean()), float(low), float(high), n_users, len(users))
