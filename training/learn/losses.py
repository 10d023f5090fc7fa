"""Loss functions (pure tensor functions, tested directly on tiny inputs).

The multi-task objective on one batch of served impressions (``multitask_loss``):

* per task (conversion = main, engagement = auxiliary): an in-batch sampled softmax. Each
  positive row's query must pick its own item among the items of all positive rows of the
  batch, whose logits are corrected by ``-log q`` (their sampling probability; Yi et al.
  2019), plus the batch's hard negatives (served, not engaged) as extra columns. Another
  column holding the very same item is masked (it is not a negative). Engagement rows are
  weighted by ``engagement_weight`` (grows with click duration): dual positives.
* advertiser loss: a conversion row is right if its query scores any item of the converted
  advertiser high: a multi-positive softmax over the same in-batch items.
* served loss: a pointwise logistic loss on every served impression (positives vs hard
  negatives). With ``correction_mode="fn_weighting"`` it is importance-weighted as in Ktena
  et al. 2019: positives by ``1 + p``, negatives by ``(1 - p)(1 + p)``, with ``p`` the
  model's own (detached) probability, which outweighs the fake negatives that a later
  ``correction`` label contradicts.

A model with a per-item conversion bias (``ModelConfig.conversion_item_bias``) hands it in as
``conversion_bias``: it is added to every conversion logit (the conversion softmax, the
advertiser softmax and the served loss), never to the engagement task's.

With ``LossConfig.negatives = "catalog"`` (catalogs small enough to embed every step) the
softmax's candidates are the whole catalog instead (``catalog_multitask_loss``): per task, each
positive row's query must pick its own item among every catalog item (no sampling, so no logQ
correction); the advertiser loss is the multi-positive softmax over the catalog items of the
converted advertiser; the served loss is the same. ``training_loss`` picks one of the two.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from model.config import LossConfig

if TYPE_CHECKING:  # annotations only: the examples module imports this one's roles
    from model.encoding import ItemInputs
    from model.towers import TwoTowerModel
    from training.learn.examples import CatalogExamples

ROLE_NEGATIVE, ROLE_ENGAGEMENT, ROLE_CONVERSION = 0, 1, 2
NEG_INF = -1e9


def weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if values.numel() == 0:
        return values.sum()  # 0, keeps the graph
    if weights is None:
        return values.mean()
    return (values * weights).sum() / weights.sum().clamp(min=1e-12)


def in_batch_softmax_loss(
    query: torch.Tensor,            # [r, d] queries of the positive rows of one task
    items: torch.Tensor,            # [c, d] candidate items (all positive rows of the batch)
    target: torch.Tensor,           # [r] column of each row's own item
    temperature: float,
    logq: torch.Tensor | None = None,          # [c] log sampling probability of candidates
    same_item: torch.Tensor | None = None,     # [r, c] True where column holds the row's item
    hard_items: torch.Tensor | None = None,    # [h, d] hard negative items
    hard_log_weight: torch.Tensor | None = None,  # [h] log weight of each hard column
    hard_same_item: torch.Tensor | None = None,   # [r, h] True where hard column = row's item
    row_weight: torch.Tensor | None = None,    # [r]
    item_bias: torch.Tensor | None = None,     # [c] logit bias of each candidate
    hard_bias: torch.Tensor | None = None,     # [h] logit bias of each hard column
) -> torch.Tensor:
    logits = query @ items.T / temperature
    if item_bias is not None:
        logits = logits + item_bias.unsqueeze(0)
    if logq is not None:
        logits = logits - logq.unsqueeze(0)
    if same_item is not None:
        collide = same_item.clone()
        collide[torch.arange(len(target)), target] = False
        logits = logits.masked_fill(collide, NEG_INF)
    if hard_items is not None and len(hard_items):
        hard = query @ hard_items.T / temperature
        if hard_bias is not None:
            hard = hard + hard_bias.unsqueeze(0)
        if hard_log_weight is not None:
            hard = hard + hard_log_weight.unsqueeze(0)
        if hard_same_item is not None:
            hard = hard.masked_fill(hard_same_item, NEG_INF)
        logits = torch.cat([logits, hard], dim=1)
    ce = F.cross_entropy(logits, target, reduction="none")
    return weighted_mean(ce, row_weight)


def advertiser_softmax_loss(
    query: torch.Tensor,            # [r, d]
    items: torch.Tensor,            # [c, d]
    same_advertiser: torch.Tensor,  # [r, c] True where the column's advertiser is the row's
    temperature: float,
    logq: torch.Tensor | None = None,
    row_weight: torch.Tensor | None = None,
    item_bias: torch.Tensor | None = None,  # [c]
) -> torch.Tensor:
    """-log( sum_{same advertiser} exp(l) / sum_all exp(l) ) per row."""
    logits = query @ items.T / temperature
    if item_bias is not None:
        logits = logits + item_bias.unsqueeze(0)
    if logq is not None:
        logits = logits - logq.unsqueeze(0)
    positive = torch.logsumexp(logits.masked_fill(~same_advertiser, NEG_INF), dim=1)
    loss = torch.logsumexp(logits, dim=1) - positive
    return weighted_mean(loss, row_weight)


def fake_negative_weights(p: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Ktena et al. 2019 importance weights: 1 + p for positives, (1 - p)(1 + p) for
    negatives, where p is the model's (detached) probability of a positive."""
    p = p.detach()
    return torch.where(label > 0.5, 1.0 + p, (1.0 - p) * (1.0 + p))


def served_logistic_loss(logit: torch.Tensor, label: torch.Tensor, fn_weighting: bool) -> torch.Tensor:
    """Pointwise loss on served impressions (label 1 = engaged/converted, 0 = hard negative)."""
    bce = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
    weights = fake_negative_weights(torch.sigmoid(logit), label) if fn_weighting else None
    return weighted_mean(bce, weights)


@dataclass
class LossParts:
    total: torch.Tensor
    parts: dict[str, float]


def multitask_loss(
    embeddings: dict[str, tuple[torch.Tensor, torch.Tensor]],  # task -> (query [n,d], item [n,d])
    role: torch.Tensor,        # [n] ROLE_*
    weight: torch.Tensor,      # [n] engagement weight for engagement rows, 1 otherwise
    item_key: torch.Tensor,    # [n] item bucket (collision mask)
    advertiser_key: torch.Tensor,  # [n]
    logq: torch.Tensor,        # [n] log sampling probability of each row's item
    served_bias: torch.Tensor,
    cfg: LossConfig,
    conversion_bias: torch.Tensor | None = None,  # [n] each row's item's conversion logit bias
) -> LossParts:
    pos = role > ROLE_NEGATIVE
    neg = role == ROLE_NEGATIVE
    pos_idx = pos.nonzero(as_tuple=True)[0]
    neg_idx = neg.nonzero(as_tuple=True)[0] if cfg.hard_negatives else pos_idx[:0]
    col_of_row = torch.full_like(role, -1)
    col_of_row[pos_idx] = torch.arange(len(pos_idx))
    logq_cols = logq[pos_idx] if cfg.logq_correction else None
    total = torch.zeros(())
    parts: dict[str, float] = {}

    # served loss first: its probabilities give the fake-negative weights of hard columns
    q_conv, i_conv = embeddings["conversion"]
    hard_log_weight = None
    if cfg.hard_negatives and len(neg_idx):
        served = torch.cat([pos_idx, neg_idx])
        logit = (q_conv[served] * i_conv[served]).sum(-1) / cfg.temperature + served_bias
        if conversion_bias is not None:
            logit = logit + conversion_bias[served]
        label = pos[served].float()
        loss = served_logistic_loss(logit, label, cfg.correction_mode == "fn_weighting")
        total = total + cfg.hard_negative_weight * loss
        parts["served"] = float(loss.detach())
        if cfg.correction_mode == "fn_weighting":
            p_neg = torch.sigmoid(logit[len(pos_idx):]).detach()
            hard_log_weight = torch.log(fake_negative_weights(p_neg, torch.zeros_like(p_neg)).clamp(min=1e-6))

    for task, role_id, task_weight in (("conversion", ROLE_CONVERSION, cfg.conversion_weight),
                                       ("engagement", ROLE_ENGAGEMENT, cfg.engagement_weight)):
        rows = (role == role_id).nonzero(as_tuple=True)[0]
        if task_weight == 0 or len(rows) == 0:
            continue
        q, it = embeddings[task]
        bias = conversion_bias if task == "conversion" else None
        loss = in_batch_softmax_loss(
            q[rows], it[pos_idx], col_of_row[rows], cfg.temperature, logq=logq_cols,
            same_item=item_key[rows].unsqueeze(1) == item_key[pos_idx].unsqueeze(0),
            hard_items=it[neg_idx] if len(neg_idx) else None,
            hard_log_weight=hard_log_weight,
            hard_same_item=item_key[rows].unsqueeze(1) == item_key[neg_idx].unsqueeze(0),
            row_weight=weight[rows],
            item_bias=None if bias is None else bias[pos_idx],
            hard_bias=None if bias is None or not len(neg_idx) else bias[neg_idx],
        )
        total = total + task_weight * loss
        parts[task] = float(loss.detach())

    conv_rows = (role == ROLE_CONVERSION).nonzero(as_tuple=True)[0]
    if cfg.advertiser_weight > 0 and len(conv_rows):
        loss = advertiser_softmax_loss(
            q_conv[conv_rows], i_conv[pos_idx],
            advertiser_key[conv_rows].unsqueeze(1) == advertiser_key[pos_idx].unsqueeze(0),
            cfg.temperature, logq=logq_cols, row_weight=weight[conv_rows],
            item_bias=None if conversion_bias is None else conversion_bias[pos_idx])
        total = total + cfg.advertiser_weight * loss
        parts["advertiser"] = float(loss.detach())
    parts["total"] = float(total.detach())
    return LossParts(total, parts)


def training_loss(model: TwoTowerModel, batch: CatalogExamples, catalog: ItemInputs | None) -> LossParts:
    """The multi-task loss of one batch: over the whole ``catalog`` when the model's
    ``loss.negatives`` is ``catalog``, else over the batch's own items (``multitask_loss``)."""
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
