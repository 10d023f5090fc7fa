"""The report of `convcg up`: recall of every model version on the held-out tail, the live
pace, measured freshness (feature probes over HTTP, labels, models: exact percentiles, see
``loop.freshness``) and the run's counts; markdown plus plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from convcg.contract import MetricNames
from convcg.metrics_scrape import Sample, metric_sum

FRESHNESS = MetricNames.FEATURE_FRESHNESS


def evaluate_versions(events, split_index: int, catalog, registry) -> list[dict]:
    import pandas as pd

    from streams.label_join import compute_labels
    from training.evaluation import evaluate_model, evaluate_scorer, popularity_scorer

    labels = pd.DataFrame([l.to_dict() for l in compute_labels(events)])
    split_ts = events[split_index].ts if split_index < len(events) else math.inf
    history = labels[labels["label_ts"] < split_ts]
    heldout = labels[labels["label_ts"] >= split_ts]
    rows = [{"version": "popularity", **evaluate_scorer(popularity_scorer(history, catalog), history, heldout, catalog)}]
    for version in registry.versions():
        try:
            model = registry.load(version).model
        except Exception as exc:  # a refused version is reported, not fatal
            rows.append({"version": version, "error": str(exc)})
            continue
        rows.append({"version": version, **evaluate_model(model, history, heldout, catalog)})
    return rows


def write_report(home: Path, summary: dict, events, split_index: int, catalog, registry, freshness: list[Sample],
                 probe_delays: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluate_versions(events, split_index, catalog, registry)
    by_version = {r["version"]: r for r in rows}
    key = "conversion_recall@100"
    summary["conversion_recall@100_before"] = by_version.get(summary["model_before"], {}).get(key)
    summary["conversion_recall@100_after"] = by_version.get(summary["model_after"], {}).get(key)
    summary["conversion_recall@100_popularity"] = by_version["popularity"].get(key)
    summary["sink_freshness_histogram_observations"] = metric_sum(freshness, f"{FRESHNESS}_count")

    fig, ax = plt.subplots(figsize=(7, 4))
    versions = [r for r in rows if r["version"] != "popularity" and key in r]
    ax.plot(range(len(versions)), [r[key] for r in versions], marker="o", label="two-tower versions")
    ax.axhline(by_version["popularity"][key], color="grey", linestyle="--", label="popularity")
    ax.set_xticks(range(len(versions)), [r["version"] for r in versions], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(key + " (held-out tail)")
    ax.set_title("Conversion recall over model versions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(home / "recall_over_versions.png", dpi=120)
    plt.close(fig)

    plot_freshness(home / "freshness.png", probe_delays, summary)

    lines = ["# convcg up: report", "", "```json", json.dumps(summary, indent=2, default=str), "```", "",
             "## Recall on the held-out tail (never replayed)", "",
             "| version | conversion recall@100 | conversion recall@1000 | engagement recall@100 |",
             "| --- | --- | --- | --- |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['version']} | refused: {r['error']} | | |")
        else:
            lines.append(f"| {r['version']} | {r.get(key, float('nan')):.4f} | "
                         f"{r.get('conversion_recall@1000', float('nan')):.4f} | "
                         f"{r.get('engagement_recall@100', float('nan')):.4f} |")
    lines += ["", "![recall over versions](recall_over_versions.png)", ""]
    lines += freshness_section(summary)
    (home / "report.md").write_text("\n".join(lines))
    (home / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _seconds(x) -> str:
    if x is None:
        return "–"
    return f"{x * 1000:.0f} ms" if abs(x) < 1 else f"{x:.2f} s"


def freshness_section(summary: dict) -> list[str]:
    """Markdown: the live pace and the three measured freshness figures."""
    pace = summary.get("live_pace", {})
    lines = ["## Live pace and freshness (measured)", "",
             f"Live phase: {pace.get('events', 0):,} events at a steady {pace.get('target_events_per_s', 0):,.0f} "
             f"events/s (achieved {pace.get('achieved_events_per_s', 0):,.0f}/s, 1 s windows "
             f"{pace.get('slowest_1s_window_events_per_s') or 0:,.0f}–{pace.get('fastest_1s_window_events_per_s') or 0:,.0f}/s); "
             f"one wall second stood for {pace.get('event_seconds_per_wall_second', 0):,.0f} s "
             f"({pace.get('event_hours_per_wall_second', 0):.2f} h) of event time.", "",
             "| freshness | n | p50 | p90 | p99 | max | not measured |", "| --- | --- | --- | --- | --- | --- | --- |"]
    rows = [("event in Kafka -> visible in an online lookup (HTTP probes)", "feature_freshness_seconds",
             ("never_visible", "lookup_errors")),
            ("label due (decision / negative window) -> label on the topic", "label_freshness_seconds",
             ("not_due_by_the_end",)),
            ("label on the topic -> first model trained on it serving", "model_freshness_seconds",
             ("not_yet_in_a_serving_model",))]
    for title, key, extra in rows:
        f = summary.get(key) or {}
        rest = ", ".join(f"{k.replace('_', ' ')} {f.get(k, 0)}" for k in extra)
        lines.append(f"| {title} | {f.get('count', 0)} | {_seconds(f.get('p50'))} | {_seconds(f.get('p90'))} | "
                     f"{_seconds(f.get('p99'))} | {_seconds(f.get('max'))} | {rest} |")
    lines += ["", "![freshness](freshness.png)", ""]
    return lines


def plot_freshness(path: Path, probe_delays: list[float], summary: dict) -> None:
    """Histogram of the measured event -> online-lookup delays, with p50 / p99 marked."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4))
    a = np.asarray(probe_delays, dtype=float) * 1000
    if a.size:
        ax.hist(a, bins=60)
        for q, color in ((50, "green"), (99, "red")):
            v = np.percentile(a, q)
            ax.axvline(v, color=color, linestyle="--", label=f"p{q} {v:.0f} ms")
        ax.legend()
    rate = summary.get("live_pace", {}).get("target_events_per_s", 0)
    ax.set_xlabel("event in Kafka -> visible in an online lookup over HTTP (ms)")
    ax.set_ylabel("probes")
    ax.set_title(f"Feature freshness, live phase at {rate:,.0f} events/s ({a.size} probes)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
