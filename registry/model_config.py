"""The architecture and loss of one two-tower model (``ModelConfig``).

It is serialised to JSON next to the weights in the registry, so a checkpoint can always be
rebuilt exactly, by the trainer and by the retrieval side alike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

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
