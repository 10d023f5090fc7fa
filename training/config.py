"""Configuration of the training component.

* ``ModelConfig``: the architecture and loss of one two-tower model. It is serialised to JSON
  next to the weights in the registry, so a checkpoint can always be rebuilt exactly.
* ``TrainingSettings``: the operator's settings (paths, trainer service triggers, quality
  gate), read from ``CONVCG_TRAINING_*`` environment variables with embedded defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Bump when the meaning of a saved config or the module layout changes incompatibly.
MODEL_FORMAT_VERSION = 1


class TowerConfig(BaseModel):
    """Shape of one tower: a DCNv2 cross network and an MLP on the same input."""

    stacking: Literal["parallel", "sequential"] = "parallel"
    cross_layers: int = Field(2, ge=0, le=8)
    mlp_layers: int = Field(2, ge=1, le=8)
    mlp_width: int = Field(128, ge=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class LossConfig(BaseModel):
    """The multi-task objective (see ``training.losses``)."""

    #: one shared embedding (unified) or one output head per task (separate)
    heads: Literal["unified", "separate"] = "unified"
    conversion_weight: float = 1.0
    #: weight of the auxiliary engagement task (engagement positives are further
    #: weighted by their ``engagement_weight``, which grows with click duration)
    engagement_weight: float = 0.5
    #: conversions scored at advertiser granularity (0 disables the advertiser loss)
    advertiser_weight: float = 0.3
    #: served-but-not-engaged impressions as hard negatives
    hard_negatives: bool = True
    hard_negative_weight: float = 0.5
    #: ``fn_weighting``: Ktena et al. 2019 fake-negative weighting of the served-impression
    #: loss; ``plain``: train on the corrected stream as it is (the fake negative stays)
    correction_mode: Literal["fn_weighting", "plain"] = "fn_weighting"
    #: subtract log(sampling probability) from in-batch logits (sampling-bias correction)
    logq_correction: bool = True
    temperature: float = Field(0.05, gt=0.0)


class ModelConfig(BaseModel):
    """Everything needed to rebuild a model's modules and feature encoding."""

    format_version: int = MODEL_FORMAT_VERSION
    embedding_dim: int = Field(64, ge=2)
    id_dim: int = Field(32, ge=2)
    user_buckets: int = Field(50_000, ge=16)
    item_buckets: int = Field(100_000, ge=16)
    advertiser_buckets: int = Field(10_000, ge=16)
    category_buckets: int = Field(1_000, ge=4)
    surface_buckets: int = Field(16, ge=4)
    recent_items: int = Field(10, ge=0, le=100)
    query_tower: TowerConfig = TowerConfig()
    item_tower: TowerConfig = TowerConfig()
    loss: LossConfig = LossConfig()
    #: numeric streaming feature columns the model was trained with (``user__*`` on the
    #: query side; ``item__*`` and ``advertiser__*`` on the item side). Missing at inference
    #: time means 0.
    user_features: list[str] = []
    item_features: list[str] = []


class OptimConfig(BaseModel):
    """How long and how fast to train (not needed to rebuild the model)."""

    epochs: int = Field(3, ge=1)
    batch_size: int = Field(512, ge=2)
    learning_rate: float = Field(3e-3, gt=0)
    weight_decay: float = 0.0
    seed: int = 0
    #: torch intra-op threads. 1 by default: these small matrices gain little from a second
    #: thread, and on a busy 2-core machine OpenMP spin-waiting made steps ~20x slower
    #: (bench/bench_training_throughput.py prints 1 vs 2 threads)
    threads: int = Field(1, ge=1)


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
    bootstrap: str = "127.0.0.1:9092"
    topic_prefix: str = ""
    consumer_group: str = "convcg-trainer"
    trigger_labels: int = Field(10_000, ge=1)
    trigger_seconds: float = Field(3600.0, gt=0)
    #: labels needed before the first full training when the registry is empty
    min_labels_first_train: int = Field(200, ge=1)
    metrics_port: int = 0  # 0 = no Prometheus HTTP endpoint

    # incremental fine-tuning
    replay_ratio: float = Field(1.0, ge=0.0)  # older labels sampled per new label
    finetune_epochs: int = Field(1, ge=1)
    finetune_learning_rate: float = Field(1e-3, gt=0)
    holdout_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    #: publish only if candidate recall >= serving recall - gate_tolerance (absolute)
    gate_tolerance: float = Field(0.01, ge=0.0)
    gate_k: int = Field(100, ge=1)

    model: ModelConfig = ModelConfig()
    optim: OptimConfig = OptimConfig()
