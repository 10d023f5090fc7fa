"""The sequence model under the point-in-time protocol: its training rows see only the past,
both encoders run, and the protocol can fail a model (shuffled weights score clearly lower)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from model.config import ModelConfig, SequenceConfig, TowerConfig
from model.towers import TwoTowerModel
from streams.replay.datasets import load_log
from streams.label_join.joiner import compute_labels
from tests.training.evaluation.test_protocol import buy, click, tiny_log
from training.evaluation.convergence import (
    ConvergenceConfig,
    train_epochs,
    training_labels,
)
from training.evaluation.protocol import HEADLINE, POINT_IN_TIME, EvaluationSet, split_time
from training.evaluation.scoring import grade, model_scorer
from training.evaluation.settings import ProtocolSettings
from training.history import interactions_from_log
from training.learn.examples import TrainingSet
from training.learn.rows import sequence_rows
from training.learn.sequences import SequenceFeatures, catalog_frame

SMALL_TOWER = TowerConfig(cross_layers=1, mlp_layers=1, mlp_width=32)


def small_config(**overrides) -> ModelConfig:
    base = dict(embedding_dim=32, id_dim=32, item_buckets=4096, advertiser_buckets=512, category_buckets=64,
                recent_items=10, query_tower=SMALL_TOWER, item_tower=SMALL_TOWER)
    base.update(overrides)
    return ModelConfig(**base)


def test_training_rows_see_only_engagements_before_their_impression():
    log = tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 30, dwell_ms=5000),
                   buy("u1", "c", 40), click("u1", "d", 50))
    inter = interactions_from_log(log)
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events)])
    labels = labels[labels["user_id"] == "u1"].reset_index(drop=True)
    config = small_config(recent_items=3)
    features = SequenceFeatures(inter, config)
    examples = sequence_rows(labels, features, catalog_frame(inter)).examples
    bucket = dict(zip(inter.item_ids, features.item_bucket))
    for row, (item, ts) in enumerate(zip(labels["item_id"], labels["impression_ts"])):
        engaged_before = [i for i, t in (("a", 10), ("b", 20), ("c", 30), ("d", 50)) if t < ts][::-1][:3]
        recent = examples.queries.recent[row].tolist()
        assert recent == [bucket[i] for i in engaged_before] + [0] * (3 - len(engaged_before)), (item, ts)
        ages = examples.queries.recent_age[row, :len(engaged_before)].tolist()
        assert all(a > 0 for a in ages)  # every visible engagement is strictly older
    d_row = labels.index[labels["item_id"] == "d"][0]
    assert examples.queries.recent_dwell[d_row, 0].item() == 5000  # c, the newest before d


@pytest.mark.parametrize("encoder", ["mean", "attention"])
def test_both_encoders_embed_users_with_and_without_history(encoder):
    inter = interactions_from_log(tiny_log(click("u1", "a", 10), click("u1", "b", 20)))
    config = small_config(sequence=SequenceConfig(encoder=encoder, heads=2))
    features = SequenceFeatures(inter, config)
    model = TwoTowerModel(config).eval()
    q = features.at(np.array(["u1", "u1", "stranger"], dtype=object), np.array([15.0, 25.0, 25.0]), ["home"] * 3)
    with torch.no_grad():
        emb = model.query_tower(q)
    assert torch.isfinite(emb).all() and emb.shape == (3, config.embedding_dim)
    assert not torch.allclose(emb[0], emb[1])  # b became visible


def shuffled(model: TwoTowerModel, seed: int = 0) -> TwoTowerModel:
    """The same model with every parameter's values permuted."""
    out = TwoTowerModel(model.config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p, src in zip(out.parameters(), model.parameters()):
            flat = src.detach().flatten()
            p.copy_(flat[torch.randperm(len(flat), generator=gen)].view_as(p))
    return out.eval()


def test_shuffled_weights_score_clearly_below_the_trained_model():
    log = load_log("movielens-100k")
    inter = interactions_from_log(log)
    cut = split_time(inter, ProtocolSettings().test_quantile)
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events)])
    config = small_config()
    features = SequenceFeatures(inter, config)
    train = training_labels(labels, cut, negative_share=0.1)
    model = TwoTowerModel(config)
    catalog = catalog_frame(inter)
    train_epochs(model, TrainingSet(sequence_rows(train, features, catalog), catalog), ConvergenceConfig(), epochs=1)
    evaluation = EvaluationSet.build(inter, cut, tasks=("conversion",), protocols=(POINT_IN_TIME,))
    trained = grade(evaluation, model_scorer(model, features), ProtocolSettings())[HEADLINE]
    broken = grade(evaluation, model_scorer(shuffled(model), features), ProtocolSettings())[HEADLINE]
    assert trained > broken + 0.1, (trained, broken)
