"""One training step of the trainer: a full training, or an incremental fine-tune (or retrain
from scratch) judged by the quality gate on the newest held-out slice of labels.

The gate grades the candidate and the serving model on the same held-out queries with
``training.evaluation.heldout.heldout_metrics`` (the point-in-time protocol, its static column
beside it) and passes the candidate if its headline recall is not worse beyond a tolerance.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import pandas as pd
import torch

from model.config import ModelConfig
from model.towers import TwoTowerModel
from training.config import OptimConfig, TrainingSettings
from training.evaluation.heldout import heldout_evaluation, heldout_metrics, heldout_metrics_and_ranks
from training.evaluation.protocol import HEADLINE_K
from training.learn.examples import (
    feature_columns,
    replay_sample,
    sample_negatives,
    time_split,
)
from training.learn.fit import FitStats, fit
from training.learn.rows import training_set
from training.trainer.gate import judge

log = logging.getLogger(__name__)


def with_detected_features(config: ModelConfig, labels: pd.DataFrame) -> ModelConfig:
    """Use the streaming feature columns present in ``labels`` unless the config names some."""
    if config.user_features or config.item_features:
        return config
    user_cols, item_cols = feature_columns(labels)
    return config.model_copy(update={"user_features": user_cols, "item_features": item_cols})


def data_range(labels: pd.DataFrame, **extra) -> dict:
    if len(labels) == 0:
        return {"labels": 0, **extra}
    return {
        "labels": int(len(labels)),
        "impression_ts_min": float(labels["impression_ts"].min()),
        "impression_ts_max": float(labels["impression_ts"].max()),
        "label_ts_max": float(labels["label_ts"].max()),
        "kinds": {str(k): int(v) for k, v in labels["kind"].value_counts().items()},
        **extra,
    }


@dataclass
class TrainResult:
    model: TwoTowerModel
    metrics: dict
    data_range: dict
    stats: FitStats


def train_full(labels: pd.DataFrame, catalog: pd.DataFrame | None, config: ModelConfig | None = None,
               epochs: int = 3, batch_size: int = 512, learning_rate: float = 3e-3, seed: int = 0,
               evaluate_holdout: bool = True, holdout_fraction: float = 0.2, show_progress: bool = True,
               threads: int = 1, gate_k: int = HEADLINE_K, query_time: str = "engagement",
               optim: OptimConfig | None = None, negative_share: float = 1.0) -> TrainResult:
    """Train a fresh model (``optim``, or one made of ``epochs``, ``batch_size``,
    ``learning_rate``, ``seed`` and ``threads``). With ``evaluate_holdout`` the latest
    ``holdout_fraction`` of the labels (by impression time) is held out and the metrics are
    measured on it (``heldout_metrics``). ``negative_share``: the share of the negative training
    rows kept (``learn.examples.sample_negatives``)."""
    config = with_detected_features(config or ModelConfig(), labels)
    train, heldout = time_split(labels, holdout_fraction) if evaluate_holdout else (labels, labels.iloc[:0])
    optim = optim or OptimConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                 threads=threads)
    torch.manual_seed(optim.seed)
    model = TwoTowerModel(config)
    rows = sample_negatives(train, negative_share, optim.seed)
    stats = fit(model, training_set(rows, train, catalog, config, query_time), optim, show_progress,
                desc="full train")
    metrics: dict = {"final_loss": stats.epoch_losses[-1], "train_seconds": stats.seconds,
                     "examples_seen": stats.examples_seen, "examples_per_second": stats.examples_per_second}
    if evaluate_holdout and len(heldout):
        metrics.update(heldout_metrics(model, heldout_evaluation(train, heldout, catalog), catalog, gate_k))
    log.info("full training on %d labels: %d examples in %.1fs, metrics %s", len(train), stats.examples_seen,
             stats.seconds, {k: round(v, 4) for k, v in metrics.items() if isinstance(v, float)})
    return TrainResult(model, metrics, data_range(rows, mode="full", heldout=data_range(heldout),
                                                  stored_labels=int(len(labels))), stats)


@dataclass
class FinetuneResult:
    model: TwoTowerModel
    passed: bool
    reason: str
    gate_metric: str
    candidate_metrics: dict
    serving_metrics: dict
    data_range: dict
    stats: FitStats
    #: the held-out slice: evaluated, not trained on; train on it in the next step
    heldout: pd.DataFrame


def finetune(serving: TwoTowerModel, new_labels: pd.DataFrame, older_labels: pd.DataFrame,
             catalog: pd.DataFrame | None, settings: TrainingSettings, show_progress: bool = True,
             base_version: str | None = None, from_scratch: bool = False,
             gate_against: TwoTowerModel | None = None) -> FinetuneResult:
    """One incremental step: copy the serving model, train it on the new labels (minus the
    most recent held-out slice) plus a replay sample of older labels, then compare both
    models on the held-out slice under the point-in-time protocol (``heldout_metrics``).
    ``from_scratch``: the candidate is a new model of the trainer's configured model
    (``settings.model``: a changed configuration enters here) trained on all the older and new
    labels (minus the same held-out slice, with ``settings.scratch_negative_share`` of the
    negatives) with ``settings.optim``. ``gate_against``: the model the candidate must not be
    worse than (``training.trainer.gate``), by default ``serving``, the one it starts from (a
    retrain caught up in the background is judged against the version serving when it is
    collected, not against the one it started beside)."""
    mode = "retrain" if from_scratch else "finetune"
    new_train, heldout = time_split(new_labels, settings.holdout_fraction)
    history = pd.concat([older_labels, new_train], ignore_index=True)
    if from_scratch:
        replay, optim = older_labels, settings.optim
        train = sample_negatives(history, settings.scratch_negative_share, optim.seed)
        torch.manual_seed(optim.seed)
        candidate = TwoTowerModel(with_detected_features(settings.model, history))
    else:
        replay = replay_sample(older_labels, int(len(new_train) * settings.replay_ratio), seed=settings.optim.seed)
        train = sample_negatives(pd.concat([new_train, replay], ignore_index=True), settings.finetune_negative_share,
                                 settings.optim.seed)
        candidate = copy.deepcopy(serving)
        optim = settings.finetune_optim()
    examples = training_set(train, history, catalog, candidate.config, settings.query_time)
    stats = fit(candidate, examples, optim, show_progress, desc=mode)
    evaluation = heldout_evaluation(history, heldout, catalog)
    cand, cand_ranks = heldout_metrics_and_ranks(candidate, evaluation, catalog, settings.gate_k)
    serv, serv_ranks = heldout_metrics_and_ranks(gate_against or serving, evaluation, catalog, settings.gate_k)
    verdict = judge(cand_ranks, serv_ranks, evaluation.queries, settings.gate_k, settings.gate_tolerance)
    passed, name, reason = verdict.passed, verdict.metric, verdict.reason
    cand.update(final_loss=stats.epoch_losses[-1], train_seconds=stats.seconds,
                examples_seen=stats.examples_seen, **verdict.as_metrics())
    log.info("%s on %d new + %d older labels in %.1fs: %s", mode, len(new_train), len(replay), stats.seconds, reason)
    rng = data_range(train, mode=mode, base_version=base_version, new_labels=int(len(new_train)),
                     replayed=int(len(replay)), heldout=data_range(heldout),
                     **({"stored_labels": int(len(history) + len(heldout))} if from_scratch else {}))
    return FinetuneResult(candidate, passed, reason, name, cand, serv, rng, stats, heldout)

