"""The multi-task objective with the whole catalog as the softmax's candidates
(``LossConfig.negatives = "catalog"``), for catalogs small enough to embed every step.

Per task, each positive row's query must pick its own item among every catalog item (no
sampling, so no logQ correction); the advertiser loss is the multi-positive softmax over the
catalog items of the converted advertiser; the served loss on positives vs hard negatives
(with fake-negative weighting) is the one of ``training.losses``. Engagement rows are weighted
by their ``engagement_weight`` (dual positives). A model's per-item conversion bias is added to
the conversion logits of all three, as in ``training.losses``.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F

from model.encoding import ItemInputs, encode_items
from model.towers import TwoTowerModel
from training.examples import Examples
from training.losses import (
    NEG_INF,
    ROLE_CONVERSION,
    ROLE_ENGAGEMENT,
    ROLE_NEGATIVE,
    LossParts,
    multitask_loss,
    served_logistic_loss,
    weighted_mean,
)


@dataclass
class HistoryRows:
    """Where each row's visible history lies: catalog positions ``items[start[r]:end[r]]``."""

    items: torch.Tensor  # [engagements] long, catalog position of each engagement
    start: torch.Tensor  # [n] long
    end: torch.Tensor    # [n] long

    def select(self, idx) -> "HistoryRows":
        return HistoryRows(self.items, self.start[idx], self.end[idx])

    def mask(self, n_items: int) -> torch.Tensor:
        """[n, n_items] True where the item is in the row's history."""
        lengths = self.end - self.start
        row = torch.repeat_interleave(torch.arange(len(lengths)), lengths)
        first = torch.repeat_interleave(self.start - torch.cumsum(lengths, 0) + lengths, lengths)
        out = torch.zeros((len(lengths), n_items), dtype=torch.bool)
        out[row, self.items[first + torch.arange(int(lengths.sum()))]] = True
        return out


@dataclass
class CatalogExamples:
    """Examples, the catalog position of each row's item and (optionally) its history."""

    examples: Examples
    catalog_index: torch.Tensor  # [n] long
    history: HistoryRows | None = None

    def __len__(self) -> int:
        return len(self.examples)

    def select(self, idx) -> "CatalogExamples":
        return CatalogExamples(self.examples.select(idx), self.catalog_index[idx],
                               None if self.history is None else self.history.select(idx))

    def candidate_mask(self, rows: torch.Tensor, n_items: int) -> torch.Tensor | None:
        """[len(rows), n_items] True where an item is not a candidate of the row's softmax:
        in its history and not its own positive; None without a history."""
        if self.history is None:
            return None
        mask = self.history.select(rows).mask(n_items)
        mask[torch.arange(len(rows)), self.catalog_index[rows]] = False
        return mask


@dataclass
class TrainingSet:
    """Encoded training rows and the catalog their softmax ranks against (``rows.catalog_index``
    are positions in ``catalog``)."""

    rows: CatalogExamples
    catalog: pd.DataFrame

    def __len__(self) -> int:
        return len(self.rows)

    def select(self, idx) -> "TrainingSet":
        return TrainingSet(self.rows.select(idx), self.catalog)

    def catalog_inputs(self, model: TwoTowerModel) -> ItemInputs | None:
        """The catalog encoded for ``model``'s catalog softmax; None for in-batch negatives."""
        return encode_items(self.catalog, model.config) if model.config.loss.negatives == "catalog" else None


def training_loss(model: TwoTowerModel, batch: CatalogExamples, catalog: ItemInputs | None) -> LossParts:
    """The multi-task loss of one batch: over the whole ``catalog`` when the model's
    ``loss.negatives`` is ``catalog``, else over the batch's own items (``training.losses``)."""
    if model.config.loss.negatives == "catalog":
        if catalog is None:
            raise ValueError("loss.negatives = 'catalog' needs the encoded catalog (TrainingSet.catalog_inputs)")
        return catalog_multitask_loss(model, batch, catalog, catalog.advertiser)
    ex = batch.examples
    return multitask_loss(model.embed(ex.queries, ex.items), ex.role, ex.weight, ex.items.item,
                          ex.items.advertiser, ex.logq, model.served_bias, model.config.loss,
                          model.item_tower.logit_bias(ex.items, "conversion"))


def catalog_multitask_loss(model: TwoTowerModel, batch: CatalogExamples, catalog: ItemInputs,
                           catalog_advertiser: torch.Tensor) -> LossParts:
    cfg = model.config.loss
    ex, idx = batch.examples, batch.catalog_index
    hq, hc = model.query_tower.hidden(ex.queries), model.item_tower.hidden(catalog)
    emb = {task: (model.query_tower.heads(hq, task), model.item_tower.heads(hc, task))
           for task in ("conversion", "engagement")}
    bias = {task: model.item_tower.logit_bias(catalog, task) for task in ("conversion", "engagement")}
    total, parts = torch.zeros(()), {}
    q_conv, c_conv = emb["conversion"]
    negative = ex.role == ROLE_NEGATIVE
    if cfg.hard_negatives and negative.any():
        logit = (q_conv * c_conv[idx]).sum(-1) / cfg.temperature + model.served_bias
        if bias["conversion"] is not None:
            logit = logit + bias["conversion"][idx]
        loss = served_logistic_loss(logit, (~negative).float(), cfg.correction_mode == "fn_weighting")
        total = total + cfg.hard_negative_weight * loss
        parts["served"] = float(loss.detach())
    for task, role_id, task_weight in (("conversion", ROLE_CONVERSION, cfg.conversion_weight),
                                       ("engagement", ROLE_ENGAGEMENT, cfg.engagement_weight)):
        rows = (ex.role == role_id).nonzero(as_tuple=True)[0]
        if task_weight == 0 or len(rows) == 0:
            continue
        q, c = emb[task]
        logits = q[rows] @ c.T / cfg.temperature
        if bias[task] is not None:
            logits = logits + bias[task]
        excluded = batch.candidate_mask(rows, c.shape[0]) if cfg.mask_history else None
        if excluded is not None:
            logits = logits.masked_fill(excluded, NEG_INF)
        ce = F.cross_entropy(logits, idx[rows], reduction="none")
        loss = weighted_mean(ce, ex.weight[rows])
        total = total + task_weight * loss
        parts[task] = float(loss.detach())
    rows = (ex.role == ROLE_CONVERSION).nonzero(as_tuple=True)[0]
    if cfg.advertiser_weight > 0 and len(rows):
        logits = q_conv[rows] @ c_conv.T / cfg.temperature
        if bias["conversion"] is not None:
            logits = logits + bias["conversion"]
        same = catalog_advertiser.unsqueeze(0) == catalog_advertiser[idx[rows]].unsqueeze(1)
        loss = (torch.logsumexp(logits, 1) - torch.logsumexp(logits.masked_fill(~same, NEG_INF), 1)).mean()
        total = total + cfg.advertiser_weight * loss
        parts["advertiser"] = float(loss.detach())
    parts["total"] = float(total.detach())
    return LossParts(total, parts)
