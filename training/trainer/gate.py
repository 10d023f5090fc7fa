"""The quality gate: may a candidate replace the model that serves now? (pure)

Both models answer the same held-out queries (point-in-time, ``training.evaluation.heldout``).
Their difference is judged per query and resampled by user (``paired_bootstrap``): comparing
two recalls measured on separate slices, or without an interval, passed and refused models on
noise. The candidate passes unless it is worse than the serving model beyond ``tolerance``
with 95% confidence, i.e. unless the upper end of the interval of (candidate - serving) is
below ``-tolerance``. The task judged is the first of ``TASKS`` with queries in the slice
(conversions; a slice with none is judged on engagements).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from training.evaluation.paired_bootstrap import PairedDifference, paired_bootstrap
from training.evaluation.protocol import POINT_IN_TIME, TASKS, Queries, metric_name

#: bootstrap replicates of one gate decision
GATE_REPLICATES = 1000


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    #: the metric judged ("" when the slice has no positives)
    metric: str
    reason: str
    paired: PairedDifference | None = None

    def as_metrics(self) -> dict:
        """What the registry keeps of the decision beside the candidate's metrics."""
        if self.paired is None:
            return {}
        return {"gate_difference": self.paired.difference, "gate_ci95": [self.paired.low, self.paired.high],
                "gate_users": self.paired.users, "gate_queries": self.paired.queries}


def judge(candidate_ranks: dict, serving_ranks: dict, queries: dict[tuple[str, str], Queries], k: int,
          tolerance: float, replicates: int = GATE_REPLICATES, seed: int = 0) -> GateVerdict:
    """``*_ranks``: each query's 0-based rank of its positive, keyed like ``queries``
    (``(task, protocol)``), both models on the same queries."""
    for task in TASKS:
        key = (task, POINT_IN_TIME)
        q = queries.get(key)
        if q is None or len(q) == 0:
            continue
        name = metric_name(task, k)
        hits_c = (np.asarray(candidate_ranks[key]) < k).astype(np.float64)
        hits_s = (np.asarray(serving_ranks[key]) < k).astype(np.float64)
        d = paired_bootstrap(hits_c, hits_s, q.user, replicates=replicates, seed=seed)
        ok = d.high >= -tolerance
        reason = (f"{'passes' if ok else 'fails'}: {name} candidate {hits_c.mean():.4f} vs serving "
                  f"{hits_s.mean():.4f}, paired difference {d.difference:+.4f} (95% CI {d.low:+.4f} to "
                  f"{d.high:+.4f}; {d.users} users, {d.queries} queries; refused only if the interval "
                  f"lies below {-tolerance:+.4f})")
        return GateVerdict(ok, name, reason, d)
    return GateVerdict(False, "", "held-out slice has no positives: the gate cannot judge, not publishing")
