"""Sequence encoders of the query tower: the user's recent engagements (newest first, PAD
where empty, each with its age at query time and its dwell) -> one vector.

* ``MeanPooling``: the mean of the engaged items' embeddings.
* ``CausalSelfAttention`` (SASRec, Kang & McAuley 2018): each engagement's token is its item
  embedding plus a recency embedding (its rank, or its log2 age bucket) plus a projection of
  its log dwell; Transformer layers where an engagement attends to itself and older ones
  only; the output at the newest engagement is the user's state.

The encoder may read only the newest ``attention_items`` of the window; ``long_term_pooling``
adds the mean over the whole window beside it (short- and long-term taste).
"""

from __future__ import annotations

import torch
from torch import nn

from model.encoding import PAD
from model.config import ModelConfig, SequenceConfig


def age_buckets(age_seconds: torch.Tensor, buckets: int) -> torch.Tensor:
    """floor(log2(1 + age)), clipped to [0, buckets - 1]."""
    return torch.log2(1.0 + age_seconds.clamp(min=0.0)).floor().long().clamp(0, buckets - 1)


def log_dwell(dwell_ms: torch.Tensor) -> torch.Tensor:
    return torch.log1p(dwell_ms.clamp(min=0.0) / 1000.0).unsqueeze(-1)


class MeanPooling(nn.Module):
    def forward(self, tokens: torch.Tensor, present: torch.Tensor, age: torch.Tensor,
                dwell: torch.Tensor) -> torch.Tensor:
        mask = present.unsqueeze(-1).float()
        return (tokens * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, length: int, cfg: SequenceConfig):
        super().__init__()
        self.cfg = cfg
        self.recency = nn.Embedding(cfg.age_buckets if cfg.time_encoding == "time_gap" else max(length, 1), dim)
        self.dwell = nn.Linear(1, dim) if cfg.dwell else None
        layer = nn.TransformerEncoderLayer(dim, cfg.heads, dim_feedforward=2 * dim, dropout=cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(cfg.dropout)
        # newest first: position i may attend to positions >= i (itself and older engagements)
        self.register_buffer("future", torch.tril(torch.ones(length, length, dtype=torch.bool), -1),
                             persistent=False)

    def forward(self, tokens: torch.Tensor, present: torch.Tensor, age: torch.Tensor,
                dwell: torch.Tensor) -> torch.Tensor:
        if self.cfg.time_encoding == "time_gap":
            recency = self.recency(age_buckets(age, self.cfg.age_buckets))
        else:
            recency = self.recency(torch.arange(tokens.shape[1], device=tokens.device)).unsqueeze(0)
        x = tokens + recency
        if self.dwell is not None:
            x = x + self.dwell(log_dwell(dwell))
        x = self.drop(x) * present.unsqueeze(-1)
        # a user with no history still reads out position 0 (a padding token): never an
        # all-masked attention row
        padding = ~present
        padding[:, 0] = False
        # the mask is anti-causal (newest first), never torch's causal one: saying so spares
        # torch comparing it with a causal mask it builds on every call
        out = self.layers(x, mask=self.future, src_key_padding_mask=padding, is_causal=False)
        return self.norm(out[:, 0])


class SequenceEncoder(nn.Module):
    """Item embedding table of the recent engagements and the configured encoder.

    With ``share_item_embeddings`` the table is the item tower's (``shared_items``, indexed by
    bucket, where the sequence holds bucket + 1 and PAD), so what the model learns about an
    item as a candidate also serves it as history."""

    def __init__(self, config: ModelConfig, shared_items: nn.Embedding | None = None):
        super().__init__()
        d = config.id_dim
        cfg = config.sequence
        if cfg.share_item_embeddings:
            if shared_items is None:
                raise ValueError("share_item_embeddings needs the item tower's item table")
            self.shared = [shared_items]  # a list: not registered twice as a submodule
            self.items = None
        else:
            self.shared = []
            self.items = nn.Embedding(config.item_buckets + 1, d, padding_idx=PAD, sparse=True)
        self.short = min(cfg.attention_items or config.recent_items, config.recent_items)
        self.encoder = (CausalSelfAttention(d, self.short, cfg) if cfg.encoder == "attention" else MeanPooling())
        self.long_term = MeanPooling() if cfg.long_term_pooling else None
        self.width_out = d * (2 if cfg.long_term_pooling else 1)

    def forward(self, recent: torch.Tensor, age: torch.Tensor, dwell: torch.Tensor) -> torch.Tensor:
        present = recent != PAD
        if recent.shape[1] == 0:
            return torch.zeros((recent.shape[0], self.width_out))
        if self.items is not None:
            tokens = self.items(recent)
        else:
            tokens = self.shared[0]((recent - 1).clamp(min=0)) * present.unsqueeze(-1)
        n = self.short
        out = self.encoder(tokens[:, :n], present[:, :n], age[:, :n], dwell[:, :n])
        if self.long_term is None:
            return out
        return torch.cat([out, self.long_term(tokens, present, age, dwell)], dim=-1)
