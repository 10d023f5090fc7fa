"""Summaries of measured samples, shared by the loop's report, the benches and the tests:
percentiles of latencies, and quantiles of a Prometheus histogram's cumulative buckets."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np


def latency_summary_ms(samples_s: Iterable[float], percentiles: Sequence[float] = (50, 99)) -> dict[str, float]:
    """``n``, ``p<q>_ms`` for each percentile ``q``, ``max_ms`` and ``mean_ms`` of latencies
    given in seconds; the figures are NaN when there are no samples."""
    a = np.asarray(list(samples_s), dtype=np.float64) * 1000.0
    out: dict[str, float] = {"n": int(a.size)}
    for q in percentiles:
        out[f"p{q:g}_ms"] = float(np.percentile(a, q)) if a.size else math.nan
    out["max_ms"] = float(a.max()) if a.size else math.nan
    out["mean_ms"] = float(a.mean()) if a.size else math.nan
    return out


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """The upper bound of the bucket in which quantile ``q`` falls, from cumulative
    ``(le, count)`` buckets sorted by ``le`` (Prometheus' histogram_quantile without
    interpolation); NaN for an empty histogram."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    total = buckets[-1][1] if buckets else 0.0
    if not total:
        return math.nan
    return next((le for le, count in buckets if count >= q * total), math.inf)


def histogram_summary(buckets: Sequence[tuple[float, float]],
                      quantiles: Sequence[float] = (0.5, 0.9, 0.99)) -> dict[str, float]:
    """``count`` and ``p<100 q>`` for each quantile of cumulative ``(le, count)`` buckets."""
    out = {"count": buckets[-1][1] if buckets else 0.0}
    for q in quantiles:
        out[f"p{round(q * 100)}"] = histogram_quantile(buckets, q)
    return out


def bucket_counts(buckets: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """Cumulative ``(le, count)`` buckets as ``(le, observations in that bucket alone)``."""
    return [(le, count - (buckets[i - 1][1] if i else 0.0)) for i, (le, count) in enumerate(buckets)]
