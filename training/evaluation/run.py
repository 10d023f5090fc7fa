"""The point-in-time evaluation run behind ``convcg eval``: the baselines, the conversion
retriever, the engagement-only two-tower of the same size and the ablations, all graded on
the same queries; mean and std over training seeds; one table and one JSON document.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import pandas as pd

from model.config import ModelConfig
from training.evaluation.baselines import baseline_scorers
from training.evaluation.convergence import ConvergenceConfig, train_to_convergence
from training.evaluation.graded_runs import (
    GradedResult,
    GradedRunStore,
    NoGradedRuns,
    frame_fingerprint,
    result_key,
)
from training.evaluation.paired_bootstrap import paired_bootstrap
from training.evaluation.protocol import (
    HEADLINE_K,
    POINT_IN_TIME,
    REPORTED_METRICS,
    EvaluationSet,
    queries_name,
    split_time,
)
from training.evaluation.scoring import grade_with_ranks, model_scorer
from training.evaluation.settings import EvalSettings
from training.history import Interactions
from training.learn.recipes import retriever_config
from training.learn.sequences import SequenceFeatures

log = logging.getLogger(__name__)

PROTOCOL_NAME = POINT_IN_TIME
#: the query set and K of the paired bootstrap (conversion retriever minus each other model)
PAIRED_KEY, PAIRED_K = ("conversion", PROTOCOL_NAME), HEADLINE_K
PRIMARY = "conversion_retriever"
#: directions the reference design reports: name -> the ablation that switches it off
REFERENCE_DIRECTIONS = {
    "parallel > sequential": "ablation: sequential DCN -> MLP",
    "unified > separate heads": "ablation: separate heads",
    "advertiser loss helps": "ablation: no advertiser loss",
    "hard negatives help": "ablation: no hard negatives",
    "fake-negative weighting helps": "ablation: no fake-negative weighting",
}
RowFilter = Callable[[pd.DataFrame], pd.DataFrame] | None
#: a model variant: its config, a label row filter, overrides of the training settings
Variant = tuple[ModelConfig, RowFilter, dict]


def engagement_only(labels: pd.DataFrame) -> pd.DataFrame:
    return labels[labels["kind"].isin(["engagement", "negative"])]


def unweighted_engagements(labels: pd.DataFrame) -> pd.DataFrame:
    return labels.assign(engagement_weight=1.0)


def model_variants(base: ModelConfig, ablations: bool = True) -> dict[str, Variant]:
    """name -> (config, label row filter, training overrides); the conversion retriever first."""
    loss = base.loss

    def with_loss(**kw) -> ModelConfig:
        return base.model_copy(update={"loss": loss.model_copy(update=kw)})

    out: dict[str, tuple] = {
        "conversion_retriever": (base, None),
        # no conversion row, conversion loss, advertiser loss or conversion item bias (left
        # in, that bias would be trained by the served loss alone: 0.62 instead of 0.67 on
        # ML-100k seed 0, a strawman)
        "engagement_two_tower": (with_loss(conversion_weight=0.0, engagement_weight=1.0, advertiser_weight=0.0)
                                 .model_copy(update={"conversion_item_bias": False}), engagement_only),
    }
    if ablations:
        out.update(ablation_variants(base, with_loss))
    return {name: (v[0], v[1], v[2] if len(v) > 2 else {}) for name, v in out.items()}


def ablation_variants(base: ModelConfig, with_loss) -> dict[str, tuple]:
    """One lever switched off (or the other way) per variant."""
    sequential = base.query_tower.model_copy(update={"stacking": "sequential"})
    return {
        "ablation: mean pooling": (base.model_copy(update={"sequence": base.sequence.model_copy(
            update={"encoder": "mean"})}), None),
        "ablation: position embeddings": (base.model_copy(update={"sequence": base.sequence.model_copy(
            update={"time_encoding": "position"})}), None),
        "ablation: user id embedding": (base.model_copy(update={"user_id_embedding": True}), None),
        "ablation: no long-term pooling": (base.model_copy(update={"sequence": base.sequence.model_copy(
            update={"long_term_pooling": False})}), None),
        "ablation: own sequence item table": (base.model_copy(update={"sequence": base.sequence.model_copy(
            update={"share_item_embeddings": False})}), None),
        "ablation: history not masked in the softmax": (with_loss(mask_history=False), None),
        "ablation: sequential DCN -> MLP": (base.model_copy(update={
            "query_tower": sequential, "item_tower": base.item_tower.model_copy(update={"stacking": "sequential"})}),
            None),
        "ablation: separate heads": (with_loss(heads="separate"), None),
        "ablation: no advertiser loss": (with_loss(advertiser_weight=0.0), None),
        "ablation: no hard negatives": (with_loss(hard_negatives=False), None),
        "ablation: no fake-negative weighting": (with_loss(correction_mode="plain"), None),
        "ablation: no logQ": (with_loss(logq_correction=False), None),
        "ablation: no engagement task": (with_loss(engagement_weight=0.0), None),
        "ablation: engagements unweighted by dwell": (base, unweighted_engagements),
        "ablation: in-batch negatives": (with_loss(negatives="in_batch"), None),
        "ablation: training queries at impression time": (base, None, {"query_time": "impression"}),
        "ablation: no conversion item bias": (base.model_copy(update={"conversion_item_bias": False}), None),
    }


def summarize(runs: dict[str, list[dict[str, float]]], metrics=REPORTED_METRICS) -> dict[str, dict]:
    """name -> metric -> {mean, std (sample std over runs; 0 for one run)}."""
    out: dict[str, dict] = {}
    for name, per_run in runs.items():
        out[name] = {}
        for m in metrics:
            values = np.array([r[m] for r in per_run], dtype=np.float64)
            out[name][m] = {"mean": float(values.mean()),
                            "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return out


def table(summary: dict[str, dict], metrics=REPORTED_METRICS) -> str:
    header = "| model | " + " | ".join(m.replace("_recall", " R") for m in metrics) + " |"
    lines = [header, "| --- |" + " ---: |" * len(metrics)]
    for name, per_metric in summary.items():
        cells = []
        for m in metrics:
            v = per_metric[m]
            cells.append(f"{v['mean']:.4f}" + (f" ± {v['std']:.4f}" if v["std"] else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_evaluation(dataset: str, labels: pd.DataFrame, inter: Interactions, settings: EvalSettings,
                   seeds: int, training: ConvergenceConfig, base: ModelConfig | None = None,
                   ablations: bool = True, only: tuple[str, ...] = (), models: bool = True,
                   store: GradedRunStore | NoGradedRuns | None = None) -> dict:
    """The JSON document of one dataset's run (see ``convcg eval``); ``models=False`` runs
    the baselines only (``labels`` may then be None). With a ``store`` (``--resume``), results
    graded by an earlier run with the same key are read instead of recomputed, and each new
    one is stored as soon as it is graded."""
    variants = model_variants(base or retriever_config(), ablations) if models else {}
    unknown = set(only) - set(variants)
    if unknown:
        raise ValueError(f"no model variant named {sorted(unknown)}; have {sorted(variants)}")
    cut = split_time(inter, settings.protocol.test_quantile)
    evaluation = EvaluationSet.build(inter, cut)
    remembered = store is not None  # fingerprint the data (~4 s on ML-1M) only for a real store
    store = store or NoGradedRuns()
    data_key = {"dataset": dataset, "split_time": cut, "protocol": settings.protocol,
                "interactions": (frame_fingerprint(inter.engagements) + frame_fingerprint(inter.conversions)
                                 if remembered else "unkeyed")}
    runs: dict[str, list[dict[str, float]]] = {}
    hits: dict[str, list[np.ndarray]] = {}

    def grade(scorer) -> tuple[dict[str, float], np.ndarray]:
        metrics, ranks = grade_with_ranks(evaluation, scorer, settings.protocol)
        return metrics, (ranks[PAIRED_KEY] < PAIRED_K).astype(np.float64)

    def keep(name: str, metrics: dict[str, float], hit: np.ndarray) -> None:
        runs.setdefault(name, []).append(metrics)
        hits.setdefault(name, []).append(hit)

    baselines_key = result_key(kind="baselines", baselines=settings.baselines, **data_key)
    graded = store.get(baselines_key)
    if graded is None:
        scorers, chosen = baseline_scorers(inter, cut, settings.baselines, settings.protocol)
        graded = GradedResult(metrics={}, hits={}, meta={"chosen": chosen})
        for name, scorer in scorers.items():
            graded.metrics[name], graded.hits[name] = grade(scorer)
        store.put(baselines_key, graded)
    else:
        log.info("baselines: graded results of an earlier run (%s)", baselines_key)
    chosen = graded.meta["chosen"]
    for name, metrics in graded.metrics.items():
        keep(name, metrics, graded.hits[name])
        log.info("%s: %s", name, {m: round(metrics[m], 4) for m in REPORTED_METRICS})
    trained: dict[str, dict] = {}
    labels_key = frame_fingerprint(labels) if variants and remembered else "none"
    for name, (config, row_filter, overrides) in variants.items():
        if only and name not in only:
            continue
        trained[name] = {"best_epochs": [], "seconds": []}
        for seed in range(seeds):
            seeded = training.model_copy(update={"seed": seed, **overrides})
            key = result_key(kind="model", config=config, training=seeded, labels=labels_key,
                             row_filter=row_filter.__name__ if row_filter else None, **data_key)
            graded = store.get(key)
            if graded is None:
                result = train_to_convergence(labels, inter, cut, config, seeded, settings.protocol, row_filter)
                metrics, hit = grade(model_scorer(result.model, SequenceFeatures(inter, config)))
                graded = GradedResult(metrics={name: metrics}, hits={name: hit},
                                      meta={"best_epochs": result.best_epochs, "seconds": round(result.seconds, 1)})
                store.put(key, graded)
            else:
                log.info("%s seed %d: graded result of an earlier run (%s)", name, seed, key)
            keep(name, graded.metrics[name], graded.hits[name])
            trained[name]["best_epochs"].append(graded.meta["best_epochs"])
            trained[name]["seconds"].append(graded.meta["seconds"])
            log.info("%s seed %d (%d epochs, %.0f s): %s", name, seed, graded.meta["best_epochs"],
                     graded.meta["seconds"], {m: round(runs[name][-1][m], 4) for m in REPORTED_METRICS})
    counts = {queries_name(task): len(q) for (task, protocol), q in evaluation.queries.items()
              if protocol == PROTOCOL_NAME}
    counts[queries_name("conversion") + "_cold"] = int(evaluation.queries[("conversion", PROTOCOL_NAME)].cold.sum())
    paired = paired_differences(hits, evaluation.queries[PAIRED_KEY].user)
    return {"dataset": dataset, "protocol": PROTOCOL_NAME, "split_time": cut, "seeds": seeds, **counts,
            "baselines_chosen_on_validation": chosen, "training": trained, "models": summarize(runs),
            "paired_vs_conversion_retriever": paired, "reference_directions": reference_verdicts(paired)}


def paired_differences(hits: dict[str, list[np.ndarray]], users: np.ndarray) -> dict[str, dict]:
    """Conversion retriever minus each other model: PIT conversion recall@100 and its paired
    bootstrap 95% interval over test users (hits averaged over seeds first)."""
    if PRIMARY not in hits:
        return {}
    mine = np.mean(hits[PRIMARY], axis=0)
    return {name: paired_bootstrap(mine, np.mean(h, axis=0), users).as_dict()
            for name, h in hits.items() if name != PRIMARY}


def reference_verdicts(paired: dict[str, dict]) -> dict[str, dict]:
    """Each reference-design direction that was run: its ablation, difference, interval, verdict."""
    return {direction: {"ablation": name, **paired[name]}
            for direction, name in REFERENCE_DIRECTIONS.items() if name in paired}


def verdict_table(verdicts: dict[str, dict]) -> str:
    lines = ["| direction (reference design) | retriever minus ablation | 95% CI over users | verdict |",
             "| --- | ---: | --- | --- |"]
    for direction, v in verdicts.items():
        lines.append(f"| {direction} | {v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] "
                     f"| {v['verdict']} |")
    return "\n".join(lines)
