"""The pure parts of ``bench.experiments.refresh_interval``: which labels each refresh interval
trains on and when (the schedule), where the serving models are evaluated, and the summary
statistics over the evaluation points (no I/O, no training)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

NEVER = "never"
#: model-age buckets of the gain-by-age table
AGE_BUCKETS = 4


def parse_intervals(text: str) -> list[int | None]:
    """``"1000,5000,never"`` -> ``[1000, 5000, None]`` (None = never refresh), in the given order."""
    out: list[int | None] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        if part.lower() == NEVER:
            out.append(None)
            continue
        try:
            value = int(part.replace("_", ""))
        except ValueError as exc:
            raise ValueError(f"refresh interval {part!r} is neither a positive integer nor {NEVER!r}") from exc
        if value <= 0:
            raise ValueError(f"refresh interval must be positive, got {value}")
        out.append(value)
    if not out:
        raise ValueError("no refresh interval given")
    if len(set(out)) != len(out):
        raise ValueError(f"refresh intervals repeat: {text!r}")
    return out


def interval_name(interval: int | None) -> str:
    return NEVER if interval is None else f"{interval:,}"


def split_initial(labels: pd.DataFrame, initial_fraction: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Order by label time (stable), then (initial training part, stream part)."""
    if not 0.0 < initial_fraction < 1.0:
        raise ValueError(f"initial fraction must be in (0, 1), got {initial_fraction}")
    ordered = labels.sort_values("label_ts", kind="stable").reset_index(drop=True)
    cut = int(round(len(ordered) * initial_fraction))
    return ordered.iloc[:cut], ordered.iloc[cut:].reset_index(drop=True)


def refresh_points(stream_len: int, interval: int | None) -> list[int]:
    """Stream positions (labels seen since the initial model) at which a refresh happens."""
    if interval is None:
        return []
    return list(range(interval, stream_len + 1, interval))


def evaluation_slices(stream_len: int, every: int, window: int) -> list[tuple[int, int]]:
    """``[start, end)`` stream positions of each evaluation: starts at 0, every ``every``
    labels; only complete windows (a short tail would be a noisier point)."""
    if every <= 0 or window <= 0:
        raise ValueError("evaluation step and window must be positive")
    return [(s, s + window) for s in range(0, stream_len - window + 1, every)]


@dataclass(frozen=True, order=True)
class Step:
    """One thing to do at a stream position. Refreshes sort before evaluations at the same
    position, so an evaluation sees the model refreshed on every label before it."""

    position: int
    order: int  # 0 = refresh, 1 = evaluate
    interval: int | None = field(compare=False, default=None)
    end: int = field(compare=False, default=0)

    @property
    def is_refresh(self) -> bool:
        return self.order == 0


def schedule(stream_len: int, intervals: list[int | None], every: int, window: int) -> list[Step]:
    steps = [Step(p, 0, interval=n) for n in intervals for p in refresh_points(stream_len, n)]
    steps += [Step(s, 1, end=e) for s, e in evaluation_slices(stream_len, every, window)]
    return sorted(steps, key=lambda s: (s.position, s.order, -1 if s.interval is None else s.interval))


def model_age(position: int, interval: int | None) -> int:
    """Labels the serving model has not been refreshed on at ``position`` (if every refresh
    is published): ``position mod interval``, or ``position`` if it never refreshes."""
    return position if interval is None else position % interval


def refresh_inputs(initial: pd.DataFrame, stream: pd.DataFrame, carried: pd.DataFrame, last_refresh: int,
                   position: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fresh, older) for a refresh at ``position``, as the trainer service splits them:
    fresh = the held-out rows carried from the previous step + the stream labels since the
    last refresh; older = every other label known before them (the replay pool)."""
    if not 0 <= last_refresh < position <= len(stream):
        raise ValueError(f"refresh at {position} after {last_refresh} is outside the stream of {len(stream)}")
    new = stream.iloc[last_refresh:position]
    fresh = pd.concat([carried, new], ignore_index=True) if len(carried) else new
    known = pd.concat([initial, stream.iloc[:last_refresh]], ignore_index=True)
    older = known[~known["label_id"].isin(carried["label_id"])] if len(carried) else known
    return fresh, older


@dataclass
class Evaluation:
    position: int
    recall: float
    positives: int


@dataclass
class ArmSummary:
    name: str
    points: int
    mean_recall: float
    stderr: float
    pooled_recall: float
    diff_vs_never: float
    diff_stderr: float


def mean_and_stderr(values: np.ndarray) -> tuple[float, float]:
    values = values[~np.isnan(values)]
    if len(values) == 0:
        return math.nan, math.nan
    if len(values) == 1:
        return float(values[0]), math.nan
    return float(values.mean()), float(values.std(ddof=1) / math.sqrt(len(values)))


def summarize(name: str, evals: list[Evaluation], reference: list[Evaluation] | None) -> ArmSummary:
    """Mean recall over the evaluation points (± standard error), recall pooled over all
    positives, and the paired difference to ``reference`` on the same points."""
    recall = np.array([e.recall for e in evals], dtype=np.float64)
    mean, se = mean_and_stderr(recall)
    total = sum(e.positives for e in evals if not math.isnan(e.recall))
    hits = sum(e.recall * e.positives for e in evals if not math.isnan(e.recall))
    diff, diff_se = math.nan, math.nan
    if reference is not None:
        if [e.position for e in reference] != [e.position for e in evals]:
            raise ValueError("paired comparison needs the same evaluation points")
        diff, diff_se = mean_and_stderr(recall - np.array([e.recall for e in reference], dtype=np.float64))
    pooled = hits / total if total else math.nan
    return ArmSummary(name, len(evals), mean, se, pooled, diff, diff_se)


def gain_by_model_age(evals: list[Evaluation], reference: list[Evaluation], interval: int,
                      buckets: int = AGE_BUCKETS) -> list[tuple[int, int, float, float, int]]:
    """(age from, age to, mean recall gain over ``reference``, its s.e., points) per bucket of
    model age (labels since the last refresh point): does a refreshed model lose its edge
    as it ages? Points before the first refresh are left out (both serve the initial model)."""
    out = []
    for b in range(buckets):
        lo, hi = b * interval // buckets, (b + 1) * interval // buckets
        gains = np.array([e.recall - r.recall for e, r in zip(evals, reference)
                          if e.position >= interval and lo <= model_age(e.position, interval) < hi],
                         dtype=np.float64)
        mean, se = mean_and_stderr(gains)
        out.append((lo, hi, mean, se, int((~np.isnan(gains)).sum())))
    return out
