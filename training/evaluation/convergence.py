"""Training a two-tower model to convergence under the point-in-time protocol.

The training period (labels whose impression and outcome are both before the cut) loses its
last ``validation_share`` of engagement time to a validation slice. The model trains on the
rest for up to ``max_epochs`` with an exponentially decaying learning rate after a linear
warm-up; after each epoch it is graded on the validation slice (PIT conversion recall@100),
and training stops after ``patience`` epochs without a gain. The best epoch count is then
re-run on the whole training period (``refit_full``), or the best validation state is kept
(its queries still see the validation period's engagements as history).
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import torch
from pydantic import BaseModel, Field

from model.config import ModelConfig
from model.towers import TwoTowerModel
from training.config import OptimConfig
from training.evaluation.protocol import HEADLINE, POINT_IN_TIME, EvaluationSet, split_time
from training.evaluation.scoring import grade, model_scorer
from training.evaluation.settings import ProtocolSettings
from training.history import Interactions
from training.learn.examples import TrainingSet, sample_negatives
from training.learn.fit import AfterEpoch, fit
from training.learn.rows import sequence_rows
from training.learn.sequences import SequenceFeatures, catalog_frame

log = logging.getLogger(__name__)
#: early stopping watches the headline figure on the validation slice
VALIDATION_METRIC = HEADLINE


class ConvergenceConfig(BaseModel):
    max_epochs: int = Field(8, ge=1)
    patience: int = Field(2, ge=1)
    batch_size: int = Field(256, ge=2)
    learning_rate: float = Field(1e-2, gt=0)
    lr_decay_per_epoch: float = Field(0.8, gt=0, le=1)
    warmup_steps: int = Field(100, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    refit_full: bool = True
    #: share of the hard-negative rows kept (seeded sample; positives are all kept)
    negative_share: float = Field(0.25, gt=0, le=1)
    #: when a training row's query is asked: ``impression`` (its served time) or ``engagement``
    #: (the impression's first engagement when it has one: when the evaluation asks)
    query_time: Literal["impression", "engagement"] = "engagement"
    seed: int = 0
    #: torch threads: 1 is faster than 2 on a machine shared with other work
    threads: int = Field(1, ge=1)


def optim_config(cfg: ConvergenceConfig, epochs: int) -> OptimConfig:
    """The trainer's optimisation settings of a convergence run (``learn.fit.fit``)."""
    return OptimConfig(epochs=epochs, batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
                       warmup_steps=cfg.warmup_steps, lr_decay_per_epoch=cfg.lr_decay_per_epoch,
                       weight_decay=cfg.weight_decay, seed=cfg.seed, threads=cfg.threads)


def train_epochs(model: TwoTowerModel, data: TrainingSet, cfg: ConvergenceConfig, epochs: int,
                 after_epoch: AfterEpoch | None = None) -> list[float]:
    """``epochs`` epochs of ``learn.fit.fit`` (no progress bar); the loss of each epoch."""
    return fit(model, data, optim_config(cfg, epochs), show_progress=False, desc="converge",
               after_epoch=after_epoch).epoch_losses


@dataclass
class ConvergedModel:
    model: TwoTowerModel
    best_epochs: int
    validation: list[float] = field(default_factory=list)
    seconds: float = 0.0


def training_labels(labels: pd.DataFrame, cut: float, negative_share: float = 1.0, seed: int = 0) -> pd.DataFrame:
    """Rows whose impression and label are both known before ``cut``, with a seeded
    ``negative_share`` of the negative rows."""
    return sample_negatives(labels[(labels["impression_ts"] < cut) & (labels["label_ts"] < cut)], negative_share, seed)


def train_to_convergence(labels: pd.DataFrame, inter: Interactions, cut: float, config: ModelConfig,
                         cfg: ConvergenceConfig, protocol: ProtocolSettings, row_filter=None) -> ConvergedModel:
    """A model trained on labels before ``cut`` with early stopping on the validation slice
    at the end of that period (``row_filter`` keeps a subset of label rows, e.g. no
    conversions for an engagement-only model)."""
    start = time.perf_counter()
    features = SequenceFeatures(inter, config)
    catalog = catalog_frame(inter)
    rows = labels if row_filter is None else row_filter(labels)
    val_cut = split_time(inter, 1.0 - protocol.validation_share, before=cut)
    val = EvaluationSet.build(inter, val_cut, cut, tasks=("conversion",), protocols=(POINT_IN_TIME,))
    if not len(val.queries[("conversion", POINT_IN_TIME)]):
        raise ValueError(f"the validation slice ({protocol.validation_share:.0%} of the training period before "
                         f"{cut:.0f}) holds no conversion query: nothing to stop early on; use a larger log "
                         "or a larger validation_share")
    torch.manual_seed(cfg.seed)
    model = TwoTowerModel(config)
    scores: list[float] = []
    best: dict = {}

    def validate(epoch: int, m: TwoTowerModel) -> bool:
        scores.append(grade(val, model_scorer(m, features), protocol)[VALIDATION_METRIC])
        log.info("epoch %d: validation %s %.4f", epoch + 1, VALIDATION_METRIC, scores[-1])
        if scores[-1] >= max(scores):
            best.update(epoch=epoch + 1, state=copy.deepcopy(m.state_dict()))
        return epoch + 1 - best["epoch"] >= cfg.patience

    train_epochs(model, TrainingSet(sequence_rows(training_labels(rows, val_cut, cfg.negative_share, cfg.seed),
                                                      features, catalog, cfg.query_time), catalog),
                 cfg, cfg.max_epochs, validate)
    if cfg.refit_full:
        torch.manual_seed(cfg.seed)
        model = TwoTowerModel(config)
        train_epochs(model, TrainingSet(sequence_rows(training_labels(rows, cut, cfg.negative_share, cfg.seed),
                                                          features, catalog, cfg.query_time), catalog),
                     cfg, best["epoch"])
    else:
        model.load_state_dict(best["state"])
    return ConvergedModel(model, best["epoch"], scores, time.perf_counter() - start)
