"""The report of `convcg up`: point-in-time recall of every model version and of the
baselines on the held-out tail (the static protocol as a second column), the live
pace, measured freshness (feature probes over HTTP, labels, models: exact percentiles, see
``loop.freshness``) and the run's counts; markdown plus plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

from convcg.contract import MetricNames
from convcg.metrics_scrape import Sample, metric_sum
from training.evaluation.protocol import (
    BASELINES,
    HEADLINE,
    HEADLINE_K,
    POINT_IN_TIME,
    STATIC,
    metric_name,
    queries_name,
)

FRESHNESS = MetricNames.FEATURE_FRESHNESS

#: the headline's static column
STATIC_HEADLINE = metric_name("conversion", HEADLINE_K, STATIC)
#: the issue's target for the last model (DESIGN.md, point-in-time protocol)
TARGET_VS_POPULARITY = 1.3
#: the table's columns: (metric, header); the static protocol is a second, named column
COLUMNS = ((HEADLINE, "PIT conv R@100"), (metric_name("conversion", 1000), "PIT conv R@1000"),
           (metric_name("engagement", HEADLINE_K), "PIT eng R@100"),
           (metric_name("conversion", HEADLINE_K, group="cold"), "PIT conv R@100 cold"),
           (metric_name("conversion", HEADLINE_K, group="warm"), "PIT conv R@100 warm"),
           (STATIC_HEADLINE, "static conv R@100 (queries frozen at T)"))


def evaluate_versions(events, split_index: int, catalog, registry, settings=None) -> tuple[list[dict], dict]:
    """Every registry version and the baselines on the held-out tail (``events[split_index:]``,
    never replayed) under the point-in-time protocol (``training.evaluation.protocol``): one query per
    test positive as of its own time, the user's engagements before it as history (the tail's
    included). Baselines are fit on the events before the split (item-kNN's last-N and EASE's
    lambda chosen on the end of that period), in the same run on the same queries. Returns
    (rows, counts of queries)."""
    from streams.replay.datasets.event_log import EventLog
    from training.evaluation.baselines import baseline_scorers
    from training.evaluation.protocol import EvaluationSet
    from training.evaluation.scoring import grade, model_scorer
    from training.evaluation.settings import EvalSettings
    from training.history import interactions_from_log
    from training.learn.sequences import SequenceFeatures, item_frame

    settings = settings or EvalSettings()
    inter = interactions_from_log(EventLog("up", list(events), catalog))
    cut = events[split_index].ts if split_index < len(events) else math.inf
    evaluation = EvaluationSet.build(inter, cut)
    scorers, chosen = baseline_scorers(inter, cut, settings.baselines, settings.protocol)
    rows = [{"version": name, "kind": "baseline", **grade(evaluation, scorers[name], settings.protocol)}
            for name in BASELINES]
    items = item_frame(inter, catalog)
    for version in registry.versions():
        try:
            model = registry.load(version).model
        except Exception as exc:  # a refused version is reported, not fatal
            rows.append({"version": version, "kind": "model", "error": str(exc)})
            continue
        scorer = model_scorer(model, SequenceFeatures(inter, model.config), items)
        rows.append({"version": version, "kind": "model", **grade(evaluation, scorer, settings.protocol)})
    pit = {key: q for key, q in evaluation.queries.items() if key[1] == POINT_IN_TIME}
    counts = {queries_name(task): len(q) for (task, _), q in pit.items()}
    counts["conversion_queries_cold_at_split"] = int(pit[("conversion", POINT_IN_TIME)].cold.sum())
    counts["split_ts"] = cut
    counts["baselines_chosen_on_validation"] = {"knn_last_items": chosen["knn_last_items"],
                                                "ease_lambda": chosen["ease_lambda"]}
    return rows, counts


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def retrieval_summary(rows: list[dict], model_before: str | None, model_after: str | None) -> dict:
    """Headline figures: PIT conversion recall@100 of the first and last serving models and
    the baselines, the last model's ratio to popularity and to item-kNN, and the target's
    verdict (met only if the last model has a value and beats both bars)."""
    by = {r["version"]: r for r in rows}

    def get(name, key=HEADLINE):
        return by.get(name, {}).get(key)

    after, pop, knn = get(model_after), get("popularity"), get("item_knn")
    vs_pop, vs_knn = _ratio(after, pop), _ratio(after, knn)
    met = after is not None and pop is not None and knn is not None and after >= TARGET_VS_POPULARITY * pop \
        and after > knn
    out = {"retrieval_protocol": "point-in-time (each test positive queried as of its own time)",
           f"{HEADLINE}_before": get(model_before), f"{HEADLINE}_after": after}
    out.update({f"{HEADLINE}_{name}": get(name) for name in BASELINES})
    out.update({f"{HEADLINE}_after_vs_popularity": vs_pop, f"{HEADLINE}_after_vs_item_knn": vs_knn,
                "retrieval_target": f"last model >= {TARGET_VS_POPULARITY}x popularity and > item-kNN "
                                    f"(PIT {HEADLINE}): {'MET' if met else 'NOT MET'}",
                "retrieval_target_met": met,
                f"{STATIC_HEADLINE}_after": get(model_after, STATIC_HEADLINE),
                f"{STATIC_HEADLINE}_popularity": get("popularity", STATIC_HEADLINE)})
    return out


def _cell(r: dict, key: str) -> str:
    v = r.get(key)
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def recall_table(rows: list[dict]) -> list[str]:
    lines = ["| version | " + " | ".join(h for _, h in COLUMNS) + " |", "| --- |" + " --- |" * len(COLUMNS)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['version']} | refused: {r['error']} |" + " |" * (len(COLUMNS) - 1))
        else:
            lines.append(f"| {r['version']} | " + " | ".join(_cell(r, k) for k, _ in COLUMNS) + " |")
    return lines


def plot_recall(path: Path, rows: list[dict]) -> None:
    """PIT conversion recall@100 per version, popularity / item-kNN / EASE as lines."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    versions = [r for r in rows if r["kind"] == "model" and HEADLINE in r]
    ax.plot(range(len(versions)), [r[HEADLINE] for r in versions], marker="o", label="two-tower versions")
    for r, style in zip([r for r in rows if r["version"] in ("popularity", "item_knn", "ease")],
                        (("grey", "--"), ("tab:orange", ":"), ("tab:green", "-."))):
        ax.axhline(r[HEADLINE], color=style[0], linestyle=style[1], label=r["version"])
    ax.set_xticks(range(len(versions)), [r["version"] for r in versions], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel("point-in-time " + HEADLINE + " (held-out tail)")
    ax.set_title("Conversion recall over model versions (point-in-time protocol)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_report(home: Path, summary: dict, events, split_index: int, catalog, registry, freshness: list[Sample],
                 probe_delays: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg")

    rows, counts = evaluate_versions(events, split_index, catalog, registry)
    summary.update(retrieval_summary(rows, summary.get("model_before"), summary.get("model_after")))
    summary["retrieval_queries"] = counts
    summary["sink_freshness_histogram_observations"] = metric_sum(freshness, f"{FRESHNESS}_count")
    plot_recall(home / "recall_over_versions.png", rows)
    plot_freshness(home / "freshness.png", probe_delays, summary)

    lines = ["# convcg up: report", "", "```json", json.dumps(summary, indent=2, default=str), "```", "",
             "## Recall on the held-out tail (never replayed), point-in-time protocol", "",
             f"{counts['conversion_queries']} test conversions ({counts['conversion_queries_cold_at_split']} from "
             f"users with no engagement before the split), {counts['engagement_queries']} test engagements; each "
             "is a query as of its own time, ranking the whole catalog minus the items the user engaged with "
             "before it. Baselines fit on the events before the split, same queries. The static protocol "
             "(every query frozen at the split) is the last column.", "",
             f"**{summary['retrieval_target']}**: last model / popularity "
             f"{_fmt_ratio(summary.get(HEADLINE + '_after_vs_popularity'))}, last model / item-kNN "
             f"{_fmt_ratio(summary.get(HEADLINE + '_after_vs_item_knn'))}.", ""]
    lines += recall_table(rows)
    lines += ["", "![recall over versions](recall_over_versions.png)", ""]
    lines += freshness_section(summary)
    (home / "report.md").write_text("\n".join(lines))
    (home / "summary.json").write_text(json.dumps(summary, indent=2, default=str))


def _fmt_ratio(x) -> str:
    return "–" if x is None else f"{x:.2f}x"


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
             f"({pace.get('event_hours_per_wall_second', 0):.2f} h) of event time"
             + (f"; the live producer lingers {pace['producer_linger_ms']} ms (probes included)."
                if "producer_linger_ms" in pace else "."), "",
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
    lines += ["", *model_freshness_parts_table((summary.get("model_freshness_seconds") or {}).get("parts")),
              "![freshness](freshness.png)", ""]
    return lines


#: what each leg of model freshness covers, in the report's words
MODEL_FRESHNESS_PART_TITLES = {
    "wait_for_step": "waiting for the trainer's next step to take it",
    "train_and_gate": "the step: store, train, gate, publish",
    "embed_and_index": "the refresher: notice the version, embed the items, write the index",
    "load_and_swap": "the retrieval service: load the index and swap it in",
}


def model_freshness_parts_table(parts: dict | None) -> list[str]:
    """Where model freshness goes: one row per leg, its p50/p99 and its share of the mean."""
    if not parts or not any((p or {}).get("count") for p in parts.values()):
        return []
    total = sum((p.get("mean") or 0.0) for p in parts.values()) or 1.0
    lines = ["Where model freshness goes (each label's delay cut into its legs):", "",
             "| leg | p50 | p99 | mean | share of the mean |", "| --- | --- | --- | --- | --- |"]
    for name, p in parts.items():
        lines.append(f"| {MODEL_FRESHNESS_PART_TITLES.get(name, name)} | {_seconds(p.get('p50'))} | "
                     f"{_seconds(p.get('p99'))} | {_seconds(p.get('mean'))} | {100 * (p.get('mean') or 0) / total:.0f}% |")
    return [*lines, ""]


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
