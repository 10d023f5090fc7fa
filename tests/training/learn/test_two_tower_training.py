"""Model modules, input encoding and the training rows; a short training run learns."""

import numpy as np
import pandas as pd
import pytest
import torch

from model.encoding import (
    encode_items,
    encode_queries,
    hash_ids,
    queries_frame,
    squash,
)
from model.config import TowerConfig
from model.towers import CrossNetwork, TwoTowerModel
from tests.support.tiny_models import tiny_config
from training.evaluation.baselines import popularity
from training.evaluation.heldout import heldout_evaluation, model_metrics
from training.evaluation.protocol import HEADLINE, HEADLINE_K, STATIC, metric_name
from training.evaluation.scoring import grade
from training.evaluation.settings import ProtocolSettings
from training.learn.examples import roles_and_weights, time_split
from training.learn.losses import ROLE_CONVERSION, ROLE_ENGAGEMENT, ROLE_NEGATIVE
from training.learn.rows import joined_rows, training_set
from training.synthetic import synthetic_catalog, synthetic_labels
from training.trainer.step import train_full


def test_cross_network_is_dcnv2_formula():
    torch.manual_seed(0)
    net = CrossNetwork(3, 2)
    x0 = torch.randn(4, 3)
    x = x0
    for layer in net.layers:
        x = x0 * (x @ layer.weight.T + layer.bias) + x
    assert torch.allclose(net(x0), x)


def test_hash_ids_are_stable_bounded_and_work_for_unseen_ids():
    a = hash_ids(["x", "y", "brand-new-id"], 16, "item")
    assert (a == hash_ids(["x", "y", "brand-new-id"], 16, "item")).all()
    assert ((a >= 0) & (a < 16)).all()
    assert (hash_ids(["x"], 1 << 30, "item") != hash_ids(["x"], 1 << 30, "user")).all()  # salted


def test_squash_is_signed_log1p_and_clears_non_finite():
    out = squash(np.array([0.0, np.e - 1, -(np.e - 1), np.nan, np.inf]))
    assert out.tolist() == pytest.approx([0.0, 1.0, -1.0, 0.0, 0.0])


@pytest.mark.parametrize("stacking", ["parallel", "sequential"])
@pytest.mark.parametrize("heads", ["unified", "separate"])
def test_towers_give_normalised_embeddings(stacking, heads):
    tower = TowerConfig(stacking=stacking, cross_layers=2, mlp_layers=2, mlp_width=16)
    config = tiny_config(query_tower=tower, item_tower=tower, user_features=["user__ctr_7d"],
                         item_features=["item__impressions_1d"])
    config = config.model_copy(update={"loss": config.loss.model_copy(update={"heads": heads})})
    model = TwoTowerModel(config)
    items = encode_items(synthetic_catalog(10), config)  # no item feature column: zeros
    queries = encode_queries(queries_frame([{"user_id": "never-seen", "surface": "search", "ctr_7d": 0.2,
                                             "recent_items": ["i1", "i2"]}, {"user_id": "u1"}]), config)
    emb = model.embed(queries, items)
    for task in ("conversion", "engagement"):
        q, i = emb[task]
        assert q.shape == (2, 16) and i.shape == (10, 16)
        assert torch.allclose(q.norm(dim=-1), torch.ones(2), atol=1e-5)
    same = torch.equal(emb["conversion"][1], emb["engagement"][1])
    assert same == (heads == "unified")


def test_label_rows_without_a_sequence_are_refused_with_the_way_out():
    # one implementation of the recent-items sequence: the stream's feature (point-in-time
    # dataset) or the label history through training_set; joined_rows derives none
    catalog = synthetic_catalog(10)
    labels = synthetic_labels(catalog, n_users=3, n_labels=20)
    assert "recent_items" not in labels.columns
    with pytest.raises(ValueError, match="training_set"):
        joined_rows(labels, catalog, tiny_config())
    assert len(training_set(labels, labels, catalog, tiny_config(), "impression")) > 0


def test_roles_and_weights_per_kind():
    labels = pd.DataFrame({"kind": ["engagement", "conversion", "negative", "correction", "bogus"],
                           "engagement_weight": [2.5, 0.0, 0.0, 0.0, 0.0]})
    role, weight = roles_and_weights(labels)
    assert role.tolist() == [ROLE_ENGAGEMENT, ROLE_CONVERSION, ROLE_NEGATIVE, ROLE_CONVERSION, -1]
    assert weight.tolist() == [2.5, 1.0, 1.0, 1.0, 1.0]


def test_examples_use_whatever_feature_columns_exist():
    catalog = synthetic_catalog(30)
    labels = synthetic_labels(catalog, n_users=5, n_labels=100, with_features=True)
    config = tiny_config(user_features=["user__engagements_7d"],
                         item_features=["item__impressions_1d", "item__not_there"])
    ex = training_set(labels, labels, catalog, config, "impression").rows.examples
    assert ex.queries.dense.shape == (len(ex), 1)
    assert ex.items.dense.shape == (len(ex), 3)  # price + 2 features
    assert (ex.items.dense[:, 2] == 0).all() and (ex.items.dense[:, 1] > 0).any()


def test_short_training_beats_popularity_on_learnable_data():
    catalog = synthetic_catalog(200, n_categories=8)
    labels = synthetic_labels(catalog, n_users=60, n_labels=4000, seed=1)
    result = train_full(labels, catalog, tiny_config(), epochs=4, batch_size=256, show_progress=False)
    history, heldout = time_split(labels, 0.2)
    evaluation = heldout_evaluation(history, heldout, catalog)
    ks = ProtocolSettings(ks=(20,))
    model_m = model_metrics(result.model, evaluation, catalog, (20,))
    pop_m = grade(evaluation, popularity(evaluation.inter, evaluation.cut), ks)
    # users like one of 8 categories: a personalised model should far exceed popularity
    for task in ("conversion", "engagement"):
        assert model_m[metric_name(task, 20)] > pop_m[metric_name(task, 20)] + 0.15
    # the held-out metrics: the point-in-time protocol and its static column, both graded here
    static = metric_name("conversion", HEADLINE_K, STATIC)
    recomputed = model_metrics(result.model, evaluation, catalog, (HEADLINE_K,))
    assert result.metrics[static] == pytest.approx(recomputed[static])
    assert result.metrics[HEADLINE] == pytest.approx(recomputed[HEADLINE])
    assert 0 < result.metrics["conversion_queries"] and 0 <= result.metrics[HEADLINE] <= 1
