"""The architecture and loss of one two-tower model (``ModelConfig``).

It is serialised to JSON next to the weights in the registry, so a checkpoint can always be
rebuilt exactly, by the trainer and by the retrieval side alike.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

#: Bump when the meaning of a saved config or the module layout changes incompatibly.
MODEL_FORMAT_VERSION = 2


class TowerConfig(BaseModel):
    """Shape of one tower: a DCNv2 cross network and an MLP on the same input."""

    stacking: Literal["parallel", "sequential"] = "parallel"
    cross_layers: int = Field(2, ge=0, le=8)
    mlp_layers: int = Field(2, ge=1, le=8)
    mlp_width: int = Field(128, ge=4)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class SequenceConfig(BaseModel):
    """How the query tower turns the user's recent engagements (newest first, each with its
    age at query time and its dwell) into one vector (see ``model.sequence``)."""

    #: ``mean``: mean of the item embeddings; ``attention``: causal self-attention
    #: (SASRec-style), read out at the newest engagement
    encoder: Literal["mean", "attention"] = "mean"
    #: ``position``: recency rank embedding; ``time_gap``: embedding of the log2 age bucket
    time_encoding: Literal["position", "time_gap"] = "time_gap"
    layers: int = Field(1, ge=1, le=6)
    heads: int = Field(2, ge=1, le=8)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    #: ages fall into buckets floor(log2(1 + seconds)), the last one open-ended
    age_buckets: int = Field(32, ge=2, le=64)
    #: add a learned projection of the log dwell time to each engagement's token
    dwell: bool = True
    #: the engagements' item embeddings are the item tower's item-id table (SASRec ties its
    #: input and output item embeddings); off: the sequence has its own table
    share_item_embeddings: bool = False
    #: the encoder reads the newest this many engagements (0: all ``recent_items``); the rest
    #: of the window only reaches the query through ``long_term_pooling``
    attention_items: int = Field(0, ge=0, le=200)
    #: also the mean of every engaged item's embedding in the window (a long-term taste next to
    #: the encoder's short-term state), concatenated to the encoder's output
    long_term_pooling: bool = False


class LossConfig(BaseModel):
    """The multi-task objective (see ``training.learn.losses``)."""

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
    #: the softmax's candidates: the batch's positive items (+ hard negatives), or every
    #: catalog item (for catalogs small enough to embed at every step)
    negatives: Literal["in_batch", "catalog"] = "in_batch"
    #: subtract log(sampling probability) from in-batch logits (sampling-bias correction)
    logq_correction: bool = True
    #: catalog softmax only: the items the user engaged with before the query's time are not
    #: candidates (as in the point-in-time protocol, which excludes them from the ranking)
    mask_history: bool = False
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
    recent_items: int = Field(10, ge=0, le=200)
    sequence: SequenceConfig = SequenceConfig()
    #: a user id embedding in the query tower; off by default: most users at query time are
    #: new, or have changed since training
    user_id_embedding: bool = False
    #: a learned per-item bias on the conversion logits (the item's conversion propensity
    #: given it is engaged with, which the engagement task does not learn)
    conversion_item_bias: bool = False
    query_tower: TowerConfig = TowerConfig()
    item_tower: TowerConfig = TowerConfig()
    loss: LossConfig = LossConfig()
    #: numeric streaming feature columns the model was trained with (``user__*`` on the
    #: query side; ``item__*`` and ``advertiser__*`` on the item side). Missing at inference
    #: time means 0.
    user_features: list[str] = []
    item_features: list[str] = []

    @property
    def retrieval_dim(self) -> int:
        """Width of the vectors an inner-product index holds for this model: the embedding,
        and one column for the item's conversion bias when the model has one
        (``TwoTowerModel.item_vectors``)."""
        return self.embedding_dim + int(self.conversion_item_bias)
