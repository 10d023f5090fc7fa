"""The soak's pure parts (`bench/reliability/soak.py`): the kill plan, the tally of retrieval queries, the
feature comparison with an undisturbed computation, and the verdict. No I/O."""

from __future__ import annotations

import math
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from tests.support.streaming_aggregator import StreamingAggregator

#: what became of one retrieval query
ANSWERED, DOWN, NOT_SERVING, FAILED = "answered", "down", "not serving", "failed"
#: a failure this close to a SIGKILL of the service was in flight when it died
IN_FLIGHT_S = 2.0
MIN_SERVED_SHARE = 0.95
#: relative tolerance of float features (rates are computed the same way from the same counts)
FLOAT_REL_TOL = 1e-9

#: (entity, entity_id) -> (event_ts, {feature: value})
Features = dict[tuple[str, str], tuple[float, dict[str, Any]]]


# --- kills ------------------------------------------------------------------------------------

def kill_plan(names: Iterable[str], budget_s: float, rng: random.Random, mean_gap_s: float = 25.0
              ) -> list[tuple[float, str]]:
    """When (seconds from the start) to SIGKILL which component: at least one kill of every
    component, about one kill per ``mean_gap_s``, in rounds that each kill every component once
    in a random order. Kill k falls at a random point of the middle of its slot
    [k, k + 1) * budget_s / n, so kills never bunch up and all of them fall inside the budget."""
    names = sorted(set(names))
    if not names:
        return []
    n = max(len(names), int(budget_s // mean_gap_s))
    order: list[str] = []
    while len(order) < n:
        order.extend(rng.sample(names, len(names)))
    slot = budget_s / n
    return [(slot * (k + rng.uniform(0.2, 0.8)), name) for k, name in enumerate(order[:n])]


def never_killed(names: Iterable[str], kills: Iterable[str]) -> list[str]:
    killed = set(kills)
    return sorted(n for n in names if n not in killed)


# --- retrieval --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Query:
    at: float  # time.monotonic() when it was answered or failed
    outcome: str
    detail: str = ""


@dataclass
class RetrievalCounts:
    answered: int = 0
    down: int = 0  # refused connection: the process was down, the query never arrived
    not_serving: int = 0  # 503: up, no model loaded (yet)
    cut_in_flight: int = 0
    failed_while_up: list[str] = field(default_factory=list)
    #: queries sent while the service was up with a model loaded: from its first answer after a
    #: start until it went down
    while_serving: int = 0

    @property
    def sent(self) -> int:
        return self.answered + self.down + self.not_serving + self.cut_in_flight + len(self.failed_while_up)

    @property
    def served_share(self) -> float:
        return self.answered / self.while_serving if self.while_serving else 0.0


def count_queries(queries: list[Query], kills: list[float], in_flight_s: float = IN_FLIGHT_S) -> RetrievalCounts:
    """Tally queries in time order. The service counts as serving from an answer until a
    refused connection shows it went down; a failure within ``in_flight_s`` of a SIGKILL of
    the service was cut in flight (the query died with the process)."""
    counts, serving = RetrievalCounts(), False
    for q in sorted(queries, key=lambda q: q.at):
        if q.outcome == ANSWERED:
            serving = True
            counts.answered += 1
            counts.while_serving += 1
        elif q.outcome == DOWN:
            serving = False
            counts.down += 1
        elif q.outcome == FAILED and any(abs(q.at - k) < in_flight_s for k in kills):
            counts.cut_in_flight += 1
        else:
            if q.outcome == NOT_SERVING:
                counts.not_serving += 1
            else:
                counts.failed_while_up.append(q.detail)
            counts.while_serving += serving
    return counts


# --- features ---------------------------------------------------------------------------------

#: the aggregates' dedupe horizon setting (``AggregateSettings.dedupe_horizon_seconds``)
HORIZON_ENV = "CONVCG_AGGREGATES_DEDUPE_HORIZON_SECONDS"


def cover_the_log_with_the_dedupe_horizon(events) -> str:
    """Set the aggregates' dedupe horizon (for this process's reference and every component
    it starts) to the log's whole event-time span plus a day; returns a line that says so.

    A replay compresses weeks of event time into minutes, and a stage refuses an event more
    than the horizon behind the newest one it has seen (``stats['too_late']``). Killing a
    component holds its partitions back for seconds of wall time: at 1 s of wall time = hours
    of event time, the default 8 days is less than one restart's catch-up, so the sources of a
    stage come back days apart and the refusals are the replay's compression, not a loss (in
    real time a restart is seconds of event time)."""
    ts = [e.ts for e in events]
    span = max(ts) - min(ts) if ts else 0.0
    horizon = span + 86_400.0
    os.environ[HORIZON_ENV] = f"{horizon:.0f}"
    return f"aggregates dedupe horizon {horizon / 86_400:.1f} d (the log spans {span / 86_400:.1f} d of event time)"


def undisturbed_features(events) -> Features:
    """The features an undisturbed computation gives over the log: the pure aggregator (the
    reference `convcg aggregates`' stages are tested against), each entity as of its newest
    event time."""
    agg = StreamingAggregator()
    for e in events:
        agg.apply(e, 0)
    return {(u.entity, u.entity_id): (u.event_ts, u.features) for u in agg.drain()}


@dataclass(frozen=True)
class Mismatch:
    entity: str
    entity_id: str
    what: str  # a feature name, "event_ts", "missing" or "unexpected"
    expected: Any
    got: Any


@dataclass
class FeatureComparison:
    entities: int = 0  # entities of the reference (each looked up)
    values: int = 0  # feature values compared (event_ts included)
    looked_up_absent: int = 0  # ids looked up that neither side has
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return self.entities > 0 and not self.mismatches


def _same(expected: Any, got: Any) -> bool:
    if isinstance(expected, float) or isinstance(got, float):
        if expected is None or got is None:
            return False
        return math.isclose(expected, got, rel_tol=FLOAT_REL_TOL, abs_tol=1e-12)
    if isinstance(expected, (list, tuple)) or isinstance(got, (list, tuple)):
        return expected is not None and got is not None and list(expected) == list(got)
    return expected == got


def compare_features(expected: Features, got: Features, looked_up: Iterable[tuple[str, str]],
                     ts_tolerance_s: float) -> FeatureComparison:
    """Every entity of ``expected`` must be in ``got`` with the same event time (within
    ``ts_tolerance_s``: the store keeps microseconds, SQLite whole seconds) and the same value of
    every feature either side names (floats to ``FLOAT_REL_TOL``); every other id that was
    ``looked_up`` must be absent from ``got`` (nothing invented)."""
    out = FeatureComparison(entities=len(expected))
    for key in sorted(set(looked_up) | set(expected) | set(got)):
        entity, entity_id = key
        if key not in expected:
            if key in got:
                out.mismatches.append(Mismatch(entity, entity_id, "unexpected", None, got[key]))
            else:
                out.looked_up_absent += 1
            continue
        ts, features = expected[key]
        if key not in got:
            out.mismatches.append(Mismatch(entity, entity_id, "missing", expected[key], None))
            continue
        got_ts, got_features = got[key]
        out.values += 1
        if got_ts is None or abs(got_ts - ts) > ts_tolerance_s:
            out.mismatches.append(Mismatch(entity, entity_id, "event_ts", ts, got_ts))
        for name in sorted(set(features) | set(got_features)):
            out.values += 1
            if not _same(features.get(name), got_features.get(name)):
                out.mismatches.append(Mismatch(entity, entity_id, name, features.get(name), got_features.get(name)))
    return out


# --- verdict ----------------------------------------------------------------------------------

@dataclass
class SoakOutcome:
    lost: int
    unexpected: int
    retrieval: RetrievalCounts
    features: FeatureComparison = field(default_factory=FeatureComparison)
    #: components planned to be killed, and the kills that happened
    components: list[str] = field(default_factory=list)
    kills: Counter = field(default_factory=Counter)
    features_settled: bool = True
    #: components that exited without being killed
    exited: list[str] = field(default_factory=list)


def soak_verdict(o: SoakOutcome, min_served_share: float = MIN_SERVED_SHARE) -> list[str]:
    """Why the soak failed (empty: it passed)."""
    why = []
    if o.lost:
        why.append(f"{o.lost} labels lost")
    if o.unexpected:
        why.append(f"{o.unexpected} unexpected labels")
    if not o.features.entities:
        why.append("no feature entity compared")
    elif o.features.mismatches:
        why.append(f"{len(o.features.mismatches)} feature values differ from the undisturbed run")
    if not o.features_settled:
        why.append("the aggregates and the sink never consumed everything")
    missed = never_killed(o.components, o.kills)
    if missed:
        why.append(f"never killed: {', '.join(missed)}")
    if o.exited:
        why.append(f"exited by themselves: {', '.join(o.exited)}")
    r = o.retrieval
    if r.failed_while_up:
        why.append(f"{len(r.failed_while_up)} retrieval queries failed while it was up")
    if not r.answered:
        why.append("retrieval answered no query")
    elif r.served_share < min_served_share:
        why.append(f"retrieval answered {r.served_share:.1%} of the queries sent while it was up with a "
                   f"model loaded (< {min_served_share:.0%})")
    return why
