"""The two-tower retriever: plain, composable ``nn.Module``s.

The query tower's main input is the user's recent engagement sequence, encoded by
``model.sequence`` (mean pooling or causal self-attention). Each tower embeds its ids (hashed buckets; sparse gradients, so a step only touches the rows
of the batch's ids, see ``training.learn.fit.make_optimizers``), concatenates them with its numeric features and
runs a DCNv2 ``CrossNetwork`` and an ``MLP``: in parallel on the same input (outputs
concatenated) or stacked (cross network, then MLP). A linear projection gives the embedding,
L2-normalised. With ``heads="separate"`` each tower has one projection per task
(conversion, engagement); with ``"unified"`` both tasks share one.

A task's logit is ``query . item / temperature``, plus the item's learned conversion bias on
the conversion task when ``conversion_item_bias`` is on. ``TwoTowerModel.query_vectors`` and
``item_vectors`` fold that bias into one inner product (``ModelConfig.retrieval_dim`` wide), so an
inner-product index ranks exactly by the logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.encoding import ItemInputs, QueryInputs, item_dense_width
from model.config import ModelConfig, TowerConfig
from model.sequence import SequenceEncoder

TASKS = ("conversion", "engagement")


class CrossNetwork(nn.Module):
    """DCNv2 (Wang et al. 2021): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l."""

    def __init__(self, width: int, layers: int):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x


class MLP(nn.Module):
    def __init__(self, width_in: int, width: int, layers: int, dropout: float = 0.0):
        super().__init__()
        blocks: list[nn.Module] = []
        for i in range(layers):
            blocks += [nn.Linear(width_in if i == 0 else width, width), nn.ReLU()]
            if dropout:
                blocks.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*blocks)
        self.width_out = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CrossMLPBlock(nn.Module):
    """Cross network and MLP, parallel (concatenated) or sequential (cross, then MLP)."""

    def __init__(self, width_in: int, tower: TowerConfig):
        super().__init__()
        self.stacking = tower.stacking
        self.norm = nn.LayerNorm(width_in)
        self.cross = CrossNetwork(width_in, tower.cross_layers)
        self.mlp = MLP(width_in, tower.mlp_width, tower.mlp_layers, tower.dropout)
        self.width_out = width_in + tower.mlp_width if self.stacking == "parallel" else tower.mlp_width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.stacking == "parallel":
            return torch.cat([self.cross(x), self.mlp(x)], dim=-1)
        return self.mlp(self.cross(x))


class Heads(nn.Module):
    """One L2-normalised projection per task, or one shared by all tasks."""

    def __init__(self, width_in: int, dim: int, separate: bool):
        super().__init__()
        self.separate = separate
        self.proj = nn.ModuleDict({t: nn.Linear(width_in, dim) for t in (TASKS if separate else TASKS[:1])})

    def forward(self, h: torch.Tensor, task: str = "conversion") -> torch.Tensor:
        proj = self.proj[task if self.separate else TASKS[0]]
        return F.normalize(proj(h), dim=-1)


class QueryTower(nn.Module):
    """Surface, the encoded recent-engagement sequence (``model.sequence``), user
    streaming features, and the user id when ``user_id_embedding`` is on."""

    def __init__(self, config: ModelConfig, shared_items: nn.Embedding | None = None):
        super().__init__()
        d = config.id_dim
        self.user = nn.Embedding(config.user_buckets, d, sparse=True) if config.user_id_embedding else None
        self.surface = nn.Embedding(config.surface_buckets, d)
        self.sequence = SequenceEncoder(config, shared_items)
        width_in = (1 + config.user_id_embedding) * d + self.sequence.width_out + len(config.user_features)
        self.block = CrossMLPBlock(width_in, config.query_tower)
        self.heads = Heads(self.block.width_out, config.embedding_dim, config.loss.heads == "separate")

    def hidden(self, q: QueryInputs) -> torch.Tensor:
        parts = [self.surface(q.surface), self.sequence(q.recent, q.recent_age, q.recent_dwell), q.dense]
        if self.user is not None:
            parts.insert(0, self.user(q.user))
        return self.block(torch.cat(parts, dim=-1))

    def forward(self, q: QueryInputs, task: str = "conversion") -> torch.Tensor:
        return self.heads(self.hidden(q), task)


class ItemTower(nn.Module):
    """Item id, advertiser, category, price and item/advertiser streaming features."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        d = config.id_dim
        self.item = nn.Embedding(config.item_buckets, d, sparse=True)
        self.advertiser = nn.Embedding(config.advertiser_buckets, d, sparse=True)
        self.category = nn.Embedding(config.category_buckets, d, sparse=True)
        width_in = 3 * d + item_dense_width(config)
        self.block = CrossMLPBlock(width_in, config.item_tower)
        self.heads = Heads(self.block.width_out, config.embedding_dim, config.loss.heads == "separate")
        self.conversion_bias = None
        if config.conversion_item_bias:
            self.conversion_bias = nn.Embedding(config.item_buckets, 1, sparse=True)
            nn.init.zeros_(self.conversion_bias.weight)

    def logit_bias(self, i: ItemInputs, task: str = "conversion") -> torch.Tensor | None:
        """[n] the items' bias on ``task``'s logits (None: no bias)."""
        if task != "conversion" or self.conversion_bias is None:
            return None
        return self.conversion_bias(i.item).squeeze(-1)

    def hidden(self, i: ItemInputs) -> torch.Tensor:
        x = torch.cat([self.item(i.item), self.advertiser(i.advertiser), self.category(i.category), i.dense], dim=-1)
        return self.block(x)

    def forward(self, i: ItemInputs, task: str = "conversion") -> torch.Tensor:
        return self.heads(self.hidden(i), task)


def sparse_and_dense_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    sparse_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse}
    params = list(model.parameters())
    return [p for p in params if id(p) in sparse_ids], [p for p in params if id(p) not in sparse_ids]


class TwoTowerModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.item_tower = ItemTower(config)
        self.query_tower = QueryTower(config, self.item_tower.item)
        #: bias of the pointwise served-impression logit (hard negatives, FN weighting)
        self.served_bias = nn.Parameter(torch.zeros(()))

    def embed(self, q: QueryInputs, i: ItemInputs) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Per task, (query, item) embeddings; both tasks share them when unified."""
        hq, hi = self.query_tower.hidden(q), self.item_tower.hidden(i)
        out = {}
        for task in TASKS:
            out[task] = (self.query_tower.heads(hq, task), self.item_tower.heads(hi, task))
        return out

    def query_vectors(self, q: QueryInputs, task: str = "conversion") -> torch.Tensor:
        """[n, retrieval_dim] the queries' embeddings, then 1 where the items carry a bias
        column: ``query_vectors . item_vectors`` is ``temperature`` x the task's logit."""
        emb = self.query_tower(q, task)
        if not self.config.conversion_item_bias:
            return emb
        return torch.cat([emb, torch.ones(len(emb), 1)], dim=-1)

    def item_vectors(self, i: ItemInputs, task: str = "conversion") -> torch.Tensor:
        """[n, retrieval_dim] the items' embeddings, then ``temperature`` x their logit bias
        on ``task`` (0 on a task without one) when the model has a conversion bias."""
        emb = self.item_tower(i, task)
        if not self.config.conversion_item_bias:
            return emb
        bias = self.item_tower.logit_bias(i, task)
        bias = torch.zeros(len(emb)) if bias is None else bias * self.config.loss.temperature
        return torch.cat([emb, bias.unsqueeze(-1)], dim=-1)
