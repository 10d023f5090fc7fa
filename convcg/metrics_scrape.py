"""Read a component's Prometheus ``/metrics``: fetch the text exposition, parse it with
prometheus_client's own parser, and select samples by name and labels."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterable

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["Sample", "fetch_samples", "histogram_buckets", "metric_sum", "parse_samples"]


def parse_samples(text: str) -> list[Sample]:
    """Every sample of a Prometheus text exposition (``_total``, ``_bucket``, ``_sum``, ...
    keep their suffixes in ``Sample.name``)."""
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def fetch_samples(port: int, host: str = "127.0.0.1", timeout: float = 3.0,
                  missing_ok: bool = False) -> list[Sample]:
    """The samples served at ``http://host:port/metrics``. Raises ``OSError`` when nothing
    answers there, or, with ``missing_ok``, returns no samples."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as response:
            text = response.read().decode()
    except OSError:
        if missing_ok:
            return []
        raise
    return parse_samples(text)


def _matching(samples: Iterable[Sample], name: str, labels: dict[str, str]) -> Iterable[Sample]:
    return (s for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def metric_sum(samples: Iterable[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called ``name`` whose labels include ``labels`` (all of that name
    when no labels are given); 0 when there is none."""
    return sum(s.value for s in _matching(samples, name, labels))


def histogram_buckets(samples: Iterable[Sample], name: str, **labels: str) -> list[tuple[float, float]]:
    """Cumulative buckets ``(le, count)`` of histogram ``name``, summed over its label sets
    (or over those that include ``labels``), sorted by ``le``."""
    merged: dict[float, float] = {}
    for s in _matching(samples, f"{name}_bucket", labels):
        le = float(s.labels["le"])  # "+Inf" included
        merged[le] = merged.get(le, 0.0) + s.value
    return sorted(merged.items())
