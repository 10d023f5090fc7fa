"""The model recipes: the ``ModelConfig``s the project trains (``convcg eval``'s conversion
retriever, the online trainer's model)."""

from __future__ import annotations

from convcg.contract import RECENT_SEQUENCE_LENGTH
from model.config import LossConfig, ModelConfig, SequenceConfig


def retriever_config(**overrides) -> ModelConfig:
    """The conversion retriever: causal self-attention over the newest 20 of the last 200
    engagements (time-gap embeddings, dwell) beside the mean of all 200 (long-term taste), the
    sequence reading the item tower's item table, parallel DCNv2 + MLP towers, unified
    multi-task head, softmax over the whole catalog minus the user's history, every other loss
    lever on, the engagement task weighted 2, softmax temperature 0.1 and a learned per-item
    bias on the conversion logits. Each choice was made on the validation slice; the figures
    are in docs/pit_eval.md, "How the retriever was chosen"."""
    base = dict(id_dim=32, item_buckets=20_000, recent_items=200, conversion_item_bias=True,
                sequence=SequenceConfig(encoder="attention", attention_items=20, long_term_pooling=True,
                                        share_item_embeddings=True, dropout=0.2),
                loss=LossConfig(negatives="catalog", mask_history=True, engagement_weight=2.0, temperature=0.1))
    base.update(overrides)
    return ModelConfig(**base)


def online_model_config() -> ModelConfig:
    """The online trainer's model: the conversion retriever over the sequence the streaming
    aggregates keep (``RECENT_SEQUENCE_LENGTH`` engagements), so it is served the history it was
    trained on."""
    return retriever_config(recent_items=RECENT_SEQUENCE_LENGTH)
