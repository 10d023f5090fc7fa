"""Operator-level steps shared by the CLI and the trainer service: train or fine-tune,
gate, publish into the registry, redraw the versions plot."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from registry.store import ModelRegistry
from training.config import TrainingSettings
from training.learn.examples import validate_labels
from training.trainer.plots import plot_versions
from training.trainer.step import FinetuneResult, finetune, train_full

log = logging.getLogger(__name__)


@dataclass
class StepOutcome:
    published: str | None  # new version id, or None
    reason: str
    metrics: dict
    heldout: pd.DataFrame | None = None


def read_table(path: Path | str) -> pd.DataFrame:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.suffix in (".parquet", ".pq"):
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix in (".jsonl", ".json"):
        return pd.read_json(path, lines=path.suffix == ".jsonl")
    raise ValueError(f"{path}: unsupported table format (use .parquet, .csv or .jsonl)")


def load_catalog(settings: TrainingSettings) -> pd.DataFrame | None:
    return read_table(settings.catalog_path) if settings.catalog_path.exists() else None


def full_training_step(settings: TrainingSettings, labels: pd.DataFrame, catalog: pd.DataFrame | None,
                       show_progress: bool = True, step_started_at: float | None = None,
                       plot: bool = True) -> StepOutcome:
    """Train the first model on ``labels`` and publish it. ``step_started_at``: the wall time the
    step took its labels, kept in the version's data range (the report's model-freshness legs);
    ``plot``: redraw the versions plot now (the trainer service draws it on its own schedule)."""
    validate_labels(labels)
    result = train_full(labels, catalog, settings.model, optim=settings.optim,
                        holdout_fraction=settings.holdout_fraction, show_progress=show_progress,
                        gate_k=settings.gate_k, query_time=settings.query_time,
                        negative_share=settings.scratch_negative_share)
    registry = ModelRegistry(settings.registry_root)
    version = registry.publish(result.model, result.model.config, result.metrics,
                               _with_step_start(result.data_range, step_started_at))
    if plot:
        plot_versions(registry)
    return StepOutcome(version, "full training", result.metrics)


def _with_step_start(data_range: dict, step_started_at: float | None) -> dict:
    return data_range if step_started_at is None else {**data_range, "step_started_at": step_started_at}


def finetune_step(settings: TrainingSettings, new_labels: pd.DataFrame, older_labels: pd.DataFrame,
                  catalog: pd.DataFrame | None, show_progress: bool = True, from_scratch: bool = False,
                  step_started_at: float | None = None, plot: bool = True) -> StepOutcome:
    """Fine-tune the current version (or train the configured model anew, ``from_scratch``); publish
    only if the quality gate passes (``step_started_at``, ``plot``: as ``full_training_step``)."""
    validate_labels(new_labels)
    registry = ModelRegistry(settings.registry_root)
    serving = registry.load()
    if len(older_labels):
        validate_labels(older_labels)
    result = finetune(serving.model, new_labels, older_labels, catalog, settings, show_progress,
                      base_version=serving.version, from_scratch=from_scratch)
    return publish_result(settings, result, serving.version, step_started_at, plot)


def publish_result(settings: TrainingSettings, result: FinetuneResult, base_version: str,
                   step_started_at: float | None = None, plot: bool = True) -> StepOutcome:
    """Publish a fine-tune's (or retrain's) candidate if its quality gate passed."""
    metrics = dict(result.candidate_metrics, gate_passed=result.passed, gate_reason=result.reason,
                   serving_metrics=result.serving_metrics, base_version=base_version)
    if not result.passed:
        log.info("candidate from %s not published: %s", base_version, result.reason)
        return StepOutcome(None, result.reason, metrics, result.heldout)
    registry = ModelRegistry(settings.registry_root)
    version = registry.publish(result.model, result.model.config, metrics,
                               _with_step_start(result.data_range, step_started_at))
    if plot:
        plot_versions(registry)
    return StepOutcome(version, result.reason, metrics, result.heldout)


#: data_range modes of a model trained from scratch
SCRATCH_MODES = ("full", "retrain")


def labels_at_last_scratch_training(registry: ModelRegistry) -> int:
    """How many labels were stored when the newest model trained from scratch was trained; 0 if none."""
    for version in reversed(registry.versions()):
        rng = registry.data_range(version)
        if rng.get("mode") in SCRATCH_MODES:
            if "stored_labels" in rng:  # every label stored then (its negatives may have been sampled)
                return int(rng["stored_labels"])
            return int(rng.get("labels", 0)) + int(rng.get("heldout", {}).get("labels", 0))
    return 0


def retrain_due(settings: TrainingSettings, stored_labels: int, at_last_scratch: int) -> bool:
    """Train from scratch instead of fine-tuning (``TrainingSettings.retrain_growth``)?"""
    growth = settings.retrain_growth
    return growth is not None and stored_labels >= growth * max(at_last_scratch, 1)
