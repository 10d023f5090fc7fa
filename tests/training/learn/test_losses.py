"""Pure loss and metric functions on tiny tensors, against answers computed independently."""

import math

import numpy as np
import pytest
import torch

from model.config import LossConfig
from training.learn.losses import (
    ROLE_CONVERSION,
    ROLE_ENGAGEMENT,
    ROLE_NEGATIVE,
    advertiser_softmax_loss,
    fake_negative_weights,
    in_batch_softmax_loss,
    multitask_loss,
    served_logistic_loss,
)


def np_softmax_ce(logits: np.ndarray, target: int) -> float:
    m = logits.max()
    return float(-(logits[target] - m - math.log(np.exp(logits - m).sum())))


Q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
I = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])


def test_in_batch_softmax_matches_hand_computation():
    loss = in_batch_softmax_loss(Q, I, torch.tensor([0, 2]), temperature=0.5)
    logits = Q.numpy() @ I.numpy().T / 0.5
    expected = (np_softmax_ce(logits[0], 0) + np_softmax_ce(logits[1], 2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_logq_correction_subtracts_log_probability_per_column():
    logq = torch.log(torch.tensor([0.5, 0.3, 0.2]))
    loss = in_batch_softmax_loss(Q, I, torch.tensor([0, 2]), temperature=1.0, logq=logq)
    logits = Q.numpy() @ I.numpy().T - np.log([0.5, 0.3, 0.2])
    expected = (np_softmax_ce(logits[0], 0) + np_softmax_ce(logits[1], 2)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    # popular positives get a larger loss after correction than without it
    plain = in_batch_softmax_loss(Q[:1], I, torch.tensor([0]), temperature=1.0)
    corrected = in_batch_softmax_loss(Q[:1], I, torch.tensor([0]), temperature=1.0, logq=logq)
    assert corrected.item() > plain.item()


def test_same_item_columns_are_masked_but_not_the_target():
    items = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # column 1 is the same item as 0
    same = torch.tensor([[True, True, False]])
    loss = in_batch_softmax_loss(Q[:1], items, torch.tensor([0]), temperature=1.0, same_item=same)
    expected = np_softmax_ce(np.array([1.0, 0.0]), 0)  # only columns 0 and 2 remain
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_hard_negative_columns_with_log_weights():
    hard = torch.tensor([[0.8, 0.6]])
    w = torch.log(torch.tensor([0.25]))
    loss = in_batch_softmax_loss(Q[:1], I[:2], torch.tensor([0]), temperature=1.0, hard_items=hard,
                                 hard_log_weight=w)
    logits = np.array([1.0, 0.6, 0.8 + math.log(0.25)])
    assert loss.item() == pytest.approx(np_softmax_ce(logits, 0), rel=1e-6)


def test_row_weights_weight_the_mean():
    target = torch.tensor([0, 2])
    per_row = [in_batch_softmax_loss(Q[i:i + 1], I, target[i:i + 1], 1.0).item() for i in range(2)]
    loss = in_batch_softmax_loss(Q, I, target, 1.0, row_weight=torch.tensor([3.0, 1.0]))
    assert loss.item() == pytest.approx((3 * per_row[0] + per_row[1]) / 4, rel=1e-6)


def test_advertiser_loss_counts_every_item_of_the_advertiser_as_positive():
    same_adv = torch.tensor([[True, True, False]])
    loss = advertiser_softmax_loss(Q[:1], I, same_adv, temperature=1.0)
    e = np.exp([1.0, 0.6, 0.0])
    assert loss.item() == pytest.approx(-math.log((e[0] + e[1]) / e.sum()), rel=1e-6)


def test_fake_negative_weights_follow_ktena_et_al():
    p = torch.tensor([0.0, 0.5, 0.9])
    assert fake_negative_weights(p, torch.ones(3)).tolist() == pytest.approx([1.0, 1.5, 1.9])
    assert fake_negative_weights(p, torch.zeros(3)).tolist() == pytest.approx([1.0, 0.75, 0.19])


def test_served_logistic_loss_weighted_and_plain():
    logit = torch.tensor([0.0, 2.0])
    label = torch.tensor([1.0, 0.0])
    bce = np.array([math.log(2), math.log(1 + math.exp(2))])
    assert served_logistic_loss(logit, label, False).item() == pytest.approx(bce.mean(), rel=1e-6)
    p1 = 1 / (1 + math.exp(-2))
    w = np.array([1.5, (1 - p1) * (1 + p1)])
    assert served_logistic_loss(logit, label, True).item() == pytest.approx((w * bce).sum() / w.sum(), rel=1e-6)


def _batch(dim=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.nn.functional.normalize(torch.randn(6, dim, generator=g), dim=-1).requires_grad_()
    i = torch.nn.functional.normalize(torch.randn(6, dim, generator=g), dim=-1).requires_grad_()
    role = torch.tensor([ROLE_CONVERSION, ROLE_ENGAGEMENT, ROLE_NEGATIVE, ROLE_CONVERSION, ROLE_NEGATIVE,
                         ROLE_ENGAGEMENT])
    return q, i, role


@pytest.mark.parametrize("cfg,expected_parts", [
    (LossConfig(), {"served", "conversion", "engagement", "advertiser", "total"}),
    (LossConfig(hard_negatives=False), {"conversion", "engagement", "advertiser", "total"}),
    (LossConfig(advertiser_weight=0.0, engagement_weight=0.0), {"served", "conversion", "total"}),
])
def test_multitask_loss_parts_and_gradients(cfg, expected_parts):
    q, i, role = _batch()
    out = multitask_loss({"conversion": (q, i), "engagement": (q, i)}, role, torch.ones(6),
                         torch.arange(6), torch.tensor([0, 0, 1, 1, 2, 2]), torch.zeros(6), torch.zeros(()), cfg)
    assert set(out.parts) == expected_parts
    out.total.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
    if not cfg.hard_negatives:  # negative rows take part in nothing
        assert q.grad[role == ROLE_NEGATIVE].abs().sum() == 0


def test_multitask_total_is_the_weighted_sum_of_parts():
    q, i, role = _batch(seed=1)
    cfg = LossConfig(conversion_weight=1.0, engagement_weight=0.5, advertiser_weight=0.3, hard_negative_weight=0.2)
    out = multitask_loss({"conversion": (q, i), "engagement": (q, i)}, role, torch.ones(6), torch.arange(6),
                         torch.tensor([0, 0, 1, 1, 2, 2]), torch.zeros(6), torch.zeros(()), cfg)
    p = out.parts
    assert p["total"] == pytest.approx(p["conversion"] + 0.5 * p["engagement"] + 0.3 * p["advertiser"]
                                       + 0.2 * p["served"], rel=1e-5)
