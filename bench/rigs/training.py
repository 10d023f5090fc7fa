"""Shared helpers of the training benchmarks on MovieLens-100k.

MovieLens-100k events come from ``streams.replay.datasets.load_log`` and are labelled by the exact
streaming rules run offline (``streams.label_join.joiner.compute_labels``).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass

import pandas as pd
import torch

from model.config import ModelConfig
from model.towers import TwoTowerModel
from training.config import OptimConfig
from training.evaluation.heldout import heldout_evaluation, heldout_metrics
from training.evaluation.protocol import HEADLINE
from training.learn.examples import replay_sample, time_split
from training.learn.fit import FitStats, fit
from training.learn.rows import training_set

THREADS = 2  # as the brief asks; on a busy machine 1 is far faster (see OptimConfig.threads)
ML100K = "movielens-100k"


def movielens_labels(negative_window_s: float | None = None) -> tuple[pd.DataFrame, pd.DataFrame, float]:
    """(labels, catalog, seconds spent) for ML-100k; ``negative_window_s`` overrides the
    label rule (a short window turns slow engagements into fake negatives + corrections)."""
    from streams.label_join.joiner import compute_labels
    from streams.label_join.rules import LabelRules
    from streams.replay.datasets import load_log

    start = time.perf_counter()
    log = load_log(ML100K)
    rules = LabelRules(negative_window_s=negative_window_s) if negative_window_s else None
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events, rules)])
    return labels, log.catalog, time.perf_counter() - start


def sample_negatives(labels: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """Keep every positive and ``fraction`` of the negative rows (seeded)."""
    if fraction >= 1.0:
        return labels
    neg = labels["kind"] == "negative"
    keep = labels[neg].sample(frac=fraction, random_state=seed)
    return pd.concat([labels[~neg], keep]).sort_values("impression_ts", kind="stable").reset_index(drop=True)


@dataclass
class Trained:
    model: TwoTowerModel
    stats: FitStats
    metrics: dict


def train_and_evaluate(train: pd.DataFrame, test: pd.DataFrame, catalog: pd.DataFrame, config: ModelConfig,
                       optim: OptimConfig, desc: str, train_filter=None) -> Trained:
    torch.manual_seed(optim.seed)
    model = TwoTowerModel(config)
    rows = train if train_filter is None else train_filter(train)
    stats = fit(model, training_set(rows, rows, catalog, config, "engagement"), optim, show_progress=True,
                desc=desc)
    return Trained(model, stats, heldout_metrics(model, heldout_evaluation(train, test, catalog), catalog))


@dataclass
class IncrementalComparison:
    full: Trained
    incremental: Trained
    base_seconds: float
    new_rows: int
    replay_rows: int

    @property
    def recall_ratio(self) -> float:
        return self.incremental.metrics[HEADLINE] / self.full.metrics[HEADLINE]

    @property
    def compute_ratio_examples(self) -> float:
        return self.incremental.stats.examples_seen / self.full.stats.examples_seen

    @property
    def compute_ratio_seconds(self) -> float:
        return self.incremental.stats.seconds / self.full.stats.seconds


def incremental_vs_full(labels: pd.DataFrame, catalog: pd.DataFrame, config: ModelConfig, optim: OptimConfig,
                        test_fraction: float = 0.2, new_fraction: float = 0.1, replay_ratio: float = 1.0,
                        finetune_epochs: int = 1, finetune_lr: float = 1e-3) -> IncrementalComparison:
    """Same data for both: history = everything before the test slice, whose last
    ``new_fraction`` (of all labels) is the "new" part. Full retrain: from scratch on the
    whole history. Incremental: a base model trained on the older history (it exists already
    in production, so its cost is not counted), fine-tuned on the new part plus a replay
    sample of older rows. Both are evaluated on the same test slice."""
    history, test = time_split(labels, test_fraction)
    older, new = time_split(history, new_fraction / (1 - test_fraction))
    full = train_and_evaluate(history, test, catalog, config, optim, "full retrain")
    base = train_and_evaluate(older, test, catalog, config, optim, "base (older history)")
    replay = replay_sample(older, int(len(new) * replay_ratio), seed=optim.seed)
    model = copy.deepcopy(base.model)
    ft_optim = optim.model_copy(update={"epochs": finetune_epochs, "learning_rate": finetune_lr})
    stats = fit(model, training_set(pd.concat([new, replay]), history, catalog, config, "engagement"), ft_optim,
                show_progress=True, desc="incremental")
    incremental = Trained(model, stats, heldout_metrics(model, heldout_evaluation(history, test, catalog), catalog))
    return IncrementalComparison(full, incremental, base.stats.seconds, len(new), len(replay))
