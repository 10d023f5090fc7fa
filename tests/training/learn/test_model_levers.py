"""The sequence model's two levers against the point-in-time protocol: the sequence reading
the item tower's item table, and the history masked out of the catalog softmax."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.config import LossConfig, SequenceConfig
from model.encoding import encode_items
from model.towers import TwoTowerModel
from streams.label_join.joiner import compute_labels
from tests.training.evaluation.test_convergence import small_config
from tests.training.evaluation.test_protocol import buy, click, tiny_log
from training.history import interactions_from_log
from training.learn.losses import catalog_multitask_loss
from training.learn.rows import sequence_rows
from training.learn.sequences import SequenceFeatures, catalog_frame


def test_shared_item_table_is_the_item_towers_and_serialises_once_per_name():
    config = small_config(sequence=SequenceConfig(share_item_embeddings=True))
    model = TwoTowerModel(config)
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 20)))
    features = SequenceFeatures(inter, config)
    q = features.at(np.array(["u1"], dtype=object), np.array([25.0]), ["home"])
    bucket = int(q.recent[0, 0]) - 1  # the sequence holds bucket + 1
    with torch.no_grad():
        model.item_tower.item.weight[bucket] = 0.0
        before = model.query_tower.sequence(q.recent, q.recent_age, q.recent_dwell).clone()
        model.item_tower.item.weight[bucket] = 5.0  # the candidate-side row of b moves...
        after = model.query_tower.sequence(q.recent, q.recent_age, q.recent_dwell)
    assert not torch.allclose(before, after)  # ...and so does the history that holds b
    # a saved model rebuilds with the same tie
    clone = TwoTowerModel(config)
    clone.load_state_dict(model.state_dict())
    assert clone.query_tower.sequence.shared[0] is clone.item_tower.item
    assert torch.equal(clone.item_tower.item.weight, model.item_tower.item.weight)


def test_masked_softmax_gives_no_mass_to_the_history_but_keeps_the_positive():
    log = tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 30), buy("u1", "c", 31),
                   click("u1", "a", 40))  # a repeat: the positive "a" is in its own history
    inter = interactions_from_log(log)
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events)])
    labels = labels[labels["user_id"] == "u1"].reset_index(drop=True)
    catalog = catalog_frame(inter)
    torch.manual_seed(0)
    losses = {}
    for mask in (False, True):
        config = small_config(loss=LossConfig(negatives="catalog", mask_history=mask, hard_negatives=False,
                                              advertiser_weight=0.0, engagement_weight=1.0))
        features = SequenceFeatures(inter, config)
        examples = sequence_rows(labels, features, catalog)
        torch.manual_seed(0)
        model = TwoTowerModel(config)
        items = encode_items(catalog, config)
        losses[mask] = catalog_multitask_loss(model, examples, items, items.advertiser).parts["engagement"]
        if mask:
            rows = torch.arange(len(examples))
            excluded = examples.candidate_mask(rows, len(catalog))
            position = {item: n for n, item in enumerate(catalog["item_id"])}
            last = labels.index[(labels["item_id"] == "a") & (labels["impression_ts"] > 35)][0]
            assert excluded[last].tolist() == [False if i in ("a", "d", "e") else True for i in catalog["item_id"]]
            assert not excluded[rows, examples.catalog_index].any()  # a positive is always a candidate
            assert position["a"] == int(examples.catalog_index[last])
    # fewer candidates: each positive's share of the softmax can only grow
    assert losses[True] < losses[False]


def test_long_term_pooling_sees_past_the_attention_window():
    config = small_config(recent_items=6, sequence=SequenceConfig(encoder="attention", attention_items=2,
                                                                  long_term_pooling=True))
    model = TwoTowerModel(config).eval()
    clicks = [click("u1", item, 10.0 * (n + 1)) for n, item in enumerate("abcde")]
    inter = interactions_from_log(tiny_log(*clicks))
    features = SequenceFeatures(inter, config)
    q = features.at(np.array(["u1"], dtype=object), np.array([100.0]), ["home"])
    seq = model.query_tower.sequence
    with torch.no_grad():
        out = seq(q.recent, q.recent_age, q.recent_dwell)
        assert out.shape == (1, 2 * config.id_dim)
        oldest = int(q.recent[0, 4])  # "a": outside the 2-item attention window
        seq.items.weight[oldest] += 1.0
        moved = seq(q.recent, q.recent_age, q.recent_dwell)
    d = config.id_dim
    assert torch.allclose(out[:, :d], moved[:, :d])  # the encoder only reads the newest two
    assert not torch.allclose(out[:, d:], moved[:, d:])  # the long-term mean reads all five
    assert torch.isfinite(model.query_tower(q)).all()
