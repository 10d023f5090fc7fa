"""The training loop: mini-batch epochs over a ``TrainingSet`` with the model's loss
(``training.learn.losses.training_loss``), sparse and dense optimizers and the learning-rate
schedule. Full training, fine-tuning and convergence runs all fit through ``fit``."""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from tqdm.auto import tqdm

from model.towers import TwoTowerModel, sparse_and_dense_parameters
from training.config import OptimConfig
from training.learn.examples import TrainingSet
from training.learn.losses import training_loss

log = logging.getLogger(__name__)


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
    the model's ``loss.negatives`` (``losses.training_loss``) and ``optim``'s learning-rate
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
    # a bar on a terminal; in a log file (`convcg up` redirects each component's stderr) its
    # frames would be most of the file: one INFO line per epoch there instead
    bar_on = show_progress and sys.stderr.isatty()
    epoch_level = logging.INFO if show_progress and not bar_on else logging.DEBUG
    for epoch in range(optim.epochs):
        model.train()
        order = torch.randperm(n, generator=gen)
        total, batches = 0.0, 0
        epoch_start = time.perf_counter()
        bar = tqdm(range(0, n, optim.batch_size), desc=f"{desc} epoch {epoch + 1}/{optim.epochs}",
                   disable=not bar_on, leave=False, unit="batch")
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
        log.log(epoch_level, "%s epoch %d/%d: loss %.4f over %d batches in %.1fs", desc, epoch + 1, optim.epochs,
                stats.epoch_losses[-1], batches, time.perf_counter() - epoch_start)
        model.eval()
        if after_epoch is not None and after_epoch(epoch, model):
            break
    stats.seconds = time.perf_counter() - start
    return stats
