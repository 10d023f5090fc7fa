"""Configuration of the training component.

* ``OptimConfig``: how long and how fast to train.
* ``TrainingSettings``: the operator's settings (paths, trainer service triggers, quality
  gate), read from ``CONVCG_TRAINING_*`` environment variables with embedded defaults.

The model's own architecture and loss (``ModelConfig``) live in :mod:`model.config`,
beside the checkpoints they rebuild.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.dedupe import DEFAULT_HORIZON_S
from convcg.kafka.settings import KafkaSettings
from model.config import ModelConfig
from training.learn.recipes import online_model_config


class OptimConfig(BaseModel):
    """How long and how fast to train (not needed to rebuild the model)."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=2)
    learning_rate: float = Field(3e-3, gt=0)
    #: the learning rate rises linearly over the first ``warmup_steps`` steps, then is
    #: multiplied by ``lr_decay_per_epoch`` after every epoch (0 and 1: constant)
    warmup_steps: int = Field(0, ge=0)
    lr_decay_per_epoch: float = Field(1.0, gt=0, le=1)
    weight_decay: float = 0.0
    seed: int = 0
    #: torch intra-op threads. 1 by default: these small matrices gain little from a second
    #: thread, and on a busy machine OpenMP spin-waiting slows every step (the training
    #: throughput bench prints 1 vs 2 threads; figures in the README)
    threads: int = Field(1, ge=1)


def merged(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in overrides.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


class TrainingSettings(BaseSettings):
    """Operator settings for ``convcg train|finetune|trainer|registry``."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_TRAINING_", env_nested_delimiter="__")

    registry_root: Path = Path("var/registry")
    #: deduplicated labels the trainer service has consumed (the replay pool)
    label_store: Path = Path("var/training/labels")
    #: item catalog (parquet: item_id, advertiser_id, category, price); if missing, the
    #: catalog is derived from the labels (category unknown, price 0)
    catalog_path: Path = Path("var/catalog/items.parquet")
    reports_dir: Path = Path("var/reports")

    # trainer service triggers
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer_group: str = "convcg-trainer"
    #: event time a label id is remembered for, to drop redelivered copies (see convcg.dedupe)
    dedupe_horizon_s: float = Field(DEFAULT_HORIZON_S, gt=0)
    trigger_labels: int = Field(10_000, ge=1)
    #: a due step first takes every label already waiting on the topic, up to this many: a
    #: trainer behind the stream catches up in one step instead of one ``trigger_labels`` slice
    #: per step (each step pays the gate, the publish and an index refresh)
    max_step_labels: int = Field(100_000, ge=1)
    #: stored labels the service keeps in memory (the newest by label time): the replay pool of
    #: fine-tunes and the data of a retrain; the label store on disk keeps every one
    max_labels_in_memory: int = Field(2_000_000, ge=1)
    #: the versions plot is redrawn at most this often (it is off the path to a served model)
    plot_interval_s: float = Field(60.0, ge=0.0)
    trigger_seconds: float = Field(3600.0, gt=0)
    #: labels needed before the first full training when the registry is empty
    min_labels_first_train: int = Field(200, ge=1)
    metrics_port: int = 0  # 0 = no Prometheus HTTP endpoint
    metrics_host: str = "127.0.0.1"  # address /metrics binds (loopback unless set)

    # incremental fine-tuning
    #: older labels sampled per new label. 0.25: the trainer's 8 steps over the live labels
    #: replayed offline (``bench.experiments.trainer_replay --limit 0 --steps 8``, 2026-12-03) ended at 0.6799
    #: against 0.6824 with 1.0 (within noise), each fine-tune taking 7-10 s instead of 12-17 s
    replay_ratio: float = Field(0.25, ge=0.0)
    #: a step trains a new model from scratch on every stored label (``optim``'s epochs; gated
    #: like a fine-tune, on the same held-out slice) instead of fine-tuning, once the stored
    #: labels have grown this many times since the last model trained from scratch: the first
    #: model comes early (from the first few thousand labels), and a model trained on a small
    #: start is not fine-tuned forever; None: fine-tune only
    retrain_growth: float | None = Field(2.0, ge=1.0)
    #: the trainer service retrains from scratch in a worker process while it goes on
    #: fine-tuning the serving model (``training.trainer.background_retrain``); False: inside the step
    retrain_in_background: bool = True
    #: rounds of fine-tuning a finished background retrain does in its worker on the labels
    #: stored since its snapshot, until at most ``trigger_labels`` are left for the collecting step
    retrain_catch_up_rounds: int = Field(3, ge=0)
    #: added to the ``convcg trainer`` process's nice value: its fine-tunes yield the cores to
    #: the streams, whose freshness is measured in milliseconds (a step's in seconds)
    trainer_niceness: int = Field(5, ge=0, le=19)
    #: added to the background retrain worker's nice value, on top of the trainer's (it yields
    #: the cores to the streams and to the fine-tunes)
    retrain_niceness: int = Field(10, ge=0, le=19)
    #: share of the served-but-not-engaged rows a training from scratch keeps (seeded; every
    #: positive is kept)
    scratch_negative_share: float = Field(0.25, gt=0.0, le=1.0)
    #: the same for fine-tunes (new and replayed rows): fewer examples per label lets a step keep
    #: up with the stream on a shared CPU (``bench.experiments.trainer_replay --validation``)
    finetune_negative_share: float = Field(1.0, gt=0.0, le=1.0)
    #: 1 epoch at 1e-3. 3 epochs at 3e-3 were tried (2026-12-02): on the first 60,000 MovieLens-100k
    #: events one replay of the trainer's steps gave 0.514 vs 0.469 (177 queries: ±0.04, a hint),
    #: but in the full `convcg up` the gate refused 14 of 27 such fine-tunes (candidates far
    #: below the serving model: over-fitted to the fresh slice) and model freshness fell to
    #: p50 392 s; the gentler step is kept, and retraining from scratch (``retrain_growth``)
    #: brings the quality
    finetune_epochs: int = Field(1, ge=1)
    finetune_learning_rate: float = Field(1e-3, gt=0)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    #: refuse a candidate only if the 95% interval of its paired recall difference to the serving
    #: model lies wholly below -gate_tolerance (``training.trainer.gate``): 0 refuses any
    #: candidate shown worse on the held-out queries
    gate_tolerance: float = Field(0.0, ge=0.0)
    gate_k: int = Field(100, ge=1)
    #: when a training row's query is asked (its sequence as of then): ``impression`` (when it
    #: was served) or ``engagement`` (its first engagement if any, else the impression: when
    #: the point-in-time evaluation asks; see ``training.learn.rows.row_query_times``)
    query_time: Literal["impression", "engagement"] = "engagement"

    model: ModelConfig = Field(default_factory=online_model_config)
    #: trainings from scratch (the first model, retrains): ``convcg eval``'s recipe
    #: (``training.evaluation.convergence.ConvergenceConfig``: batch 256, 1e-2 with 100 warm-up steps, x0.8 per
    #: epoch, a quarter of the negatives) for the 3-4 epochs its early stopping picks on ML-100k.
    #: Replaying the trainer's steps on the whole log (``bench.experiments.trainer_replay --limit 0``,
    #: 2026-12-03) gave 0.6235 with it vs 0.6131 with 3 epochs of batch 512 at 3e-3 and every
    #: negative (0.6006 with only the negatives sampled), the retrain taking 198 vs 222 s
    optim: OptimConfig = OptimConfig(epochs=4, batch_size=256, learning_rate=1e-2, warmup_steps=100,
                                     lr_decay_per_epoch=0.8)

    @field_validator("model", mode="before")
    @classmethod
    def _model_over_the_online_retriever(cls, value):
        """Model fields given in the environment (``CONVCG_TRAINING_MODEL__EMBEDDING_DIM=32``)
        change the online retriever's config, not bare ``ModelConfig`` defaults (without this,
        one such variable dropped the sequence encoder, the catalog softmax and the rest)."""
        return merged(online_model_config().model_dump(), value) if isinstance(value, dict) else value

    def finetune_optim(self) -> OptimConfig:
        """A fine-tune's optimisation: ``optim`` at ``finetune_learning_rate`` for ``finetune_epochs``,
        constant (no warm-up, no decay: a step is a few dozen batches)."""
        return self.optim.model_copy(update={"epochs": self.finetune_epochs, "learning_rate": self.finetune_learning_rate,
                                             "warmup_steps": 0, "lr_decay_per_epoch": 1.0})
