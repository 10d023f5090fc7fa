"""Training loops: full training and one incremental fine-tuning step with a quality gate."""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import torch
from tqdm.auto import tqdm

from model.encoding import RECENT_ITEMS_FEATURE
from model.towers import TwoTowerModel, sparse_and_dense_parameters
from model.config import ModelConfig
from training.catalog_loss import CatalogExamples, TrainingSet, training_loss
from training.config import OptimConfig, TrainingSettings
from training.evaluation import evaluate_model, full_catalog, metric_name
from training.examples import (
    build_examples,
    catalog_positions,
    feature_columns,
    replay_sample,
    roles_and_weights,
    sample_negatives,
    time_split,
)
from training.pit_labels import (
    heldout_evaluation,
    label_sequence_examples,
    pit_model_metrics,
)
from training.pit_protocol import STATIC_PREFIX, EvaluationSet

log = logging.getLogger("convcg.training.trainer")


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
class FitStats:
    epoch_losses: list[float] = field(default_factory=list)
    examples_seen: int = 0
    seconds: float = 0.0

    @property
    def examples_per_second(self) -> float:
        return self.examples_seen / self.seconds if self.seconds else 0.0


def make_optimizers(model: TwoTowerModel, optim: OptimConfig) -> list[torch.optim.Optimizer]:
    """SparseAdam for the id embedding tables (only the batch's rows move), Adam for the rest."""
    sparse, dense = sparse_and_dense_parameters(model)
    optimizers: list[torch.optim.Optimizer] = [
        torch.optim.Adam(dense, lr=optim.learning_rate, weight_decay=optim.weight_decay)]
    if sparse:
        optimizers.append(torch.optim.SparseAdam(sparse, lr=optim.learning_rate))
    return optimizers


def learning_rate_factor(step: int, epoch: int, optim: OptimConfig) -> float:
    """The schedule's multiplier of ``optim.learning_rate`` at a step of an epoch."""
    warm = min(1.0, (step + 1) / optim.warmup_steps) if optim.warmup_steps else 1.0
    return warm * optim.lr_decay_per_epoch ** epoch


AfterEpoch = Callable[[int, TwoTowerModel], bool]


def fit(model: TwoTowerModel, data: TrainingSet, optim: OptimConfig, show_progress: bool = True,
        desc: str = "train", after_epoch: AfterEpoch | None = None) -> FitStats:
    """Mini-batch training over shuffled rows for ``optim.epochs`` epochs, with the loss of
    the model's ``loss.negatives`` (``catalog_loss.training_loss``) and ``optim``'s learning-rate
    schedule; ``after_epoch(epoch, model) -> stop?`` runs after each epoch, the model in eval mode.

    Denormals are flushed to zero while fitting only (denormal Adam states made steps several
    times slower): the CPU flag is process-wide, and left on it would change every float
    computation that runs after training in the same process."""
    torch.set_num_threads(optim.threads)
    torch.set_flush_denormal(True)
    try:
        return _fit(model, data, optim, show_progress, desc, after_epoch)
    finally:
        torch.set_flush_denormal(False)
        model.eval()


def _fit(model: TwoTowerModel, data: TrainingSet, optim: OptimConfig, show_progress: bool, desc: str,
         after_epoch: AfterEpoch | None) -> FitStats:
    gen = torch.Generator().manual_seed(optim.seed)
    optimizers = make_optimizers(model, optim)
    catalog = data.catalog_inputs(model)
    stats = FitStats()
    start = time.perf_counter()
    n, step = len(data), 0
    for epoch in range(optim.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        bar = tqdm(range(0, n, optim.batch_size), desc=f"{desc} epoch {epoch + 1}/{optim.epochs}",
                   disable=not show_progress, leave=False, unit="batch")
        for s in bar:
            batch = data.rows.select(order[s:s + optim.batch_size])
            if len(batch) < 2:
                continue
            result = training_loss(model, batch, catalog)
            if not result.total.requires_grad:
                continue  # a batch with nothing to learn from (no positives, no negatives)
            lr = optim.learning_rate * learning_rate_factor(step, epoch, optim)
            for opt in optimizers:
                for group in opt.param_groups:
                    group["lr"] = lr
                opt.zero_grad()
            result.total.backward()
            for opt in optimizers:
                opt.step()
            step += 1
            total += result.parts["total"]
            batches += 1
            stats.examples_seen += len(batch)
            bar.set_postfix(loss=f"{result.parts['total']:.3f}")
        stats.epoch_losses.append(total / max(batches, 1))
        log.debug("%s epoch %d loss %.4f", desc, epoch + 1, stats.epoch_losses[-1])
        model.eval()
        if after_epoch is not None and after_epoch(epoch, model):
            break
    stats.seconds = time.perf_counter() - start
    return stats


def training_examples(train: pd.DataFrame, history: pd.DataFrame, catalog: pd.DataFrame | None,
                      config: ModelConfig, query_time: str) -> TrainingSet:
    """The training rows of ``train``; each query is the user's engagement sequence in
    ``history`` (label rows) before the row's query time, built as the point-in-time
    evaluation builds it (``pit_labels.label_sequence_examples``), unless the rows carry their
    own recent-items list (a feature table joined point in time), which is used as it is."""
    if RECENT_ITEMS_FEATURE in train.columns or "recent_items" in train.columns:
        return joined_sequence_examples(train, catalog, config)
    return label_sequence_examples(train, history, catalog, config, query_time)


def joined_sequence_examples(train: pd.DataFrame, catalog: pd.DataFrame | None, config: ModelConfig) -> TrainingSet:
    """Rows that carry their own sequence; the softmax's catalog is the catalog plus every
    labelled item (no history to mask: the rows carry ids only)."""
    items = full_catalog(catalog, train)
    examples = build_examples(train, items, config)
    role, _ = roles_and_weights(train)
    return TrainingSet(CatalogExamples(examples, catalog_positions(items, train["item_id"].to_numpy()[role >= 0])),
                       items)


#: recall cut-offs of the held-out metrics besides the gate's K
HELDOUT_KS = (1000,)


def heldout_metrics(model: TwoTowerModel, evaluation: EvaluationSet, history: pd.DataFrame, heldout: pd.DataFrame,
                    catalog: pd.DataFrame | None, k: int) -> dict:
    """Recall of ``model`` on the held-out label slice: point-in-time first (``conversion_recall@k``
    etc., each query as of its own time, see ``training.pit_labels``), then the static
    protocol (queries frozen at the split, ``training.evaluation``) under ``static_`` names."""
    out: dict = pit_model_metrics(model, evaluation, catalog, tuple(sorted({k, *HELDOUT_KS})))
    out.update({f"{task}_queries": float(len(q)) for (task, _), q in evaluation.queries.items()})
    static = evaluate_model(model, history, heldout, catalog, [("conversion", k), ("engagement", k)])
    out.update({STATIC_PREFIX + name: value for name, value in static.items()})
    return out


@dataclass
class TrainResult:
    model: TwoTowerModel
    metrics: dict
    data_range: dict
    stats: FitStats


def train_full(labels: pd.DataFrame, catalog: pd.DataFrame | None, config: ModelConfig | None = None,
               epochs: int = 3, batch_size: int = 512, learning_rate: float = 3e-3, seed: int = 0,
               evaluate_holdout: bool = True, holdout_fraction: float = 0.2, show_progress: bool = True,
               threads: int = 1, gate_k: int = 100, query_time: str = "engagement",
               optim: OptimConfig | None = None, negative_share: float = 1.0) -> TrainResult:
    """Train a fresh model (``optim``, or one made of ``epochs``, ``batch_size``,
    ``learning_rate``, ``seed`` and ``threads``). With ``evaluate_holdout`` the latest
    ``holdout_fraction`` of the labels (by impression time) is held out and the metrics are
    measured on it (``heldout_metrics``). ``negative_share``: the share of the negative training
    rows kept (``examples.sample_negatives``)."""
    config = with_detected_features(config or ModelConfig(), labels)
    train, heldout = time_split(labels, holdout_fraction) if evaluate_holdout else (labels, labels.iloc[:0])
    optim = optim or OptimConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                                 threads=threads)
    torch.manual_seed(optim.seed)
    model = TwoTowerModel(config)
    rows = sample_negatives(train, negative_share, optim.seed)
    stats = fit(model, training_examples(rows, train, catalog, config, query_time), optim, show_progress,
                desc="full train")
    metrics: dict = {"final_loss": stats.epoch_losses[-1], "train_seconds": stats.seconds,
                     "examples_seen": stats.examples_seen, "examples_per_second": stats.examples_per_second}
    if evaluate_holdout and len(heldout):
        metrics.update(heldout_metrics(model, heldout_evaluation(train, heldout, catalog), train, heldout, catalog,
                                       gate_k))
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


def gate_decision(candidate: dict, serving: dict, tolerance: float, k: int) -> tuple[bool, str, str]:
    """Pass if the candidate's point-in-time recall@k on the held-out slice is not worse than
    the serving model's beyond ``tolerance`` (conversion recall if the slice has
    conversions, else engagement)."""
    for task in ("conversion", "engagement"):
        name = metric_name(task, k)
        cand, serv = candidate.get(name, math.nan), serving.get(name, math.nan)
        if math.isnan(cand):
            continue
        if math.isnan(serv):
            return True, name, f"{name}={cand:.4f}; serving model has no value"
        ok = cand >= serv - tolerance
        verdict = "passes" if ok else "fails"
        return ok, name, f"{verdict}: {name} candidate {cand:.4f} vs serving {serv:.4f} (tolerance {tolerance})"
    return False, "", "held-out slice has no positives: the gate cannot judge, not publishing"


def finetune(serving: TwoTowerModel, new_labels: pd.DataFrame, older_labels: pd.DataFrame,
             catalog: pd.DataFrame | None, settings: TrainingSettings, show_progress: bool = True,
             base_version: str | None = None, from_scratch: bool = False) -> FinetuneResult:
    """One incremental step: copy the serving model, train it on the new labels (minus the
    most recent held-out slice) plus a replay sample of older labels, then compare both
    models on the held-out slice under the point-in-time protocol (``heldout_metrics``).
    ``from_scratch``: the candidate is a new model of the trainer's configured model
    (``settings.model``: a changed configuration enters here) trained on all the older and new
    labels (minus the same held-out slice, with ``settings.scratch_negative_share`` of the
    negatives) with ``settings.optim``."""
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
        train = pd.concat([new_train, replay], ignore_index=True)
        candidate = copy.deepcopy(serving)
        optim = settings.finetune_optim()
    examples = training_examples(train, history, catalog, candidate.config, settings.query_time)
    stats = fit(candidate, examples, optim, show_progress, desc=mode)
    evaluation = heldout_evaluation(history, heldout, catalog)
    cand = heldout_metrics(candidate, evaluation, history, heldout, catalog, settings.gate_k)
    serv = heldout_metrics(serving, evaluation, history, heldout, catalog, settings.gate_k)
    passed, name, reason = gate_decision(cand, serv, settings.gate_tolerance, settings.gate_k)
    cand.update(final_loss=stats.epoch_losses[-1], train_seconds=stats.seconds,
                examples_seen=stats.examples_seen)
    log.info("%s on %d new + %d older labels in %.1fs: %s", mode, len(new_train), len(replay), stats.seconds, reason)
    rng = data_range(train, mode=mode, base_version=base_version, new_labels=int(len(new_train)),
                     replayed=int(len(replay)), heldout=data_range(heldout),
                     **({"stored_labels": int(len(history) + len(heldout))} if from_scratch else {}))
    return FinetuneResult(candidate, passed, reason, name, cand, serv, rng, stats, heldout)

