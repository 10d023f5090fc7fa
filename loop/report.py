"""The report of `convcg up`: recall of every model version on the held-out tail, freshness
percentiles from the features sink's histogram, and the run's counts; markdown plus plots."""

from __future__ import annotations

import json
import math
from pathlib import Path


def histogram_percentiles(samples: dict[str, float], name: str, qs=(0.5, 0.9, 0.99)) -> dict[str, float]:
    """Percentiles from a Prometheus histogram's cumulative buckets (upper bound of the bucket
    in which the quantile falls, as Prometheus' own histogram_quantile without interpolation)."""
    buckets = []
    for key, value in samples.items():
        if key.startswith(f"{name}_bucket{{") and 'le="' in key:
            le = key.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), value))
    merged: dict[float, float] = {}
    for le, v in buckets:  # sum across label sets (entities)
        merged[le] = merged.get(le, 0.0) + v
    ordered = sorted(merged.items())
    total = ordered[-1][1] if ordered else 0.0
    out = {"count": total}
    for q in qs:
        out[f"p{round(q * 100)}"] = next((le for le, c in ordered if total and c >= q * total), float("nan"))
    return out


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


def write_report(home: Path, summary: dict, events, split_index: int, catalog, registry, freshness: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = evaluate_versions(events, split_index, catalog, registry)
    by_version = {r["version"]: r for r in rows}
    key = "conversion_recall@100"
    summary["conversion_recall@100_before"] = by_version.get(summary["model_before"], {}).get(key)
    summary["conversion_recall@100_after"] = by_version.get(summary["model_after"], {}).get(key)
    summary["conversion_recall@100_popularity"] = by_version["popularity"].get(key)
    summary["freshness_seconds"] = histogram_percentiles(freshness, "convcg_features_freshness_seconds")

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

    buckets = sorted((float("inf") if k.split('le="')[1].split('"')[0] == "+Inf" else float(k.split('le="')[1].split('"')[0]), v)
                     for k, v in freshness.items() if "_bucket{" in k)
    merged: dict[float, float] = {}
    for le, v in buckets:
        merged[le] = merged.get(le, 0.0) + v
    les = sorted(merged)
    counts = [merged[le] - (merged[les[i - 1]] if i else 0.0) for i, le in enumerate(les)]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(range(len(les)), counts)
    ax.set_xticks(range(len(les)), [("≤%g s" % le) if math.isfinite(le) else "more" for le in les], rotation=45, fontsize=7)
    ax.set_ylabel("feature updates")
    ax.set_title("Event-to-online-feature freshness")
    fig.tight_layout()
    fig.savefig(home / "freshness.png", dpi=120)
    plt.close(fig)

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
    lines += ["", "![recall over versions](recall_over_versions.png)", "", "![freshness](freshness.png)", ""]
    (home / "report.md").write_text("\n".join(lines))
    (home / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
