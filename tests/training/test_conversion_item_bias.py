"""The per-item conversion bias: the conversion losses train it, and the retrieval vectors fold
it into one inner product, so the index ranks exactly by the model's conversion logit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from index_refresher.builder import build_artifact
from model.config import LossConfig
from model.encoding import encode_items, encode_queries, queries_frame
from model.towers import TwoTowerModel
from registry.index_artifact import load_artifact
from registry.store import ModelRegistry
from retrieval.serving import ServingPair
from streams.label_join.joiner import compute_labels
from tests.support.index_rigs import IndexTestSettings
from tests.support.tiny_models import tiny_config
from tests.training.evaluation.test_convergence import small_config
from tests.training.evaluation.test_protocol import buy, click, tiny_log
from training.history import interactions_from_log
from training.learn.examples import TrainingSet
from training.learn.losses import training_loss
from training.learn.rows import sequence_rows
from training.learn.sequences import SequenceFeatures, catalog_frame
from training.synthetic import synthetic_catalog

QUERIES = [{"user_id": "u1", "surface": "home", "recent_items": ["i3", "i9"]},
           {"user_id": "u2", "surface": "search", "recent_items": ["i40"]}]


def biased_model(config) -> TwoTowerModel:
    torch.manual_seed(0)
    model = TwoTowerModel(config).eval()
    with torch.no_grad():
        model.item_tower.conversion_bias.weight.normal_(0.0, 3.0)
    return model


def test_retrieval_vectors_score_the_conversion_logit_and_plain_models_are_unchanged():
    config = tiny_config(conversion_item_bias=True)
    model = biased_model(config)
    items = encode_items(synthetic_catalog(30), config)
    queries = encode_queries(queries_frame(QUERIES), config)
    tau = config.loss.temperature
    assert config.retrieval_dim == config.embedding_dim + 1
    with torch.no_grad():
        q, c = model.query_tower(queries), model.item_tower(items)
        logit = q @ c.T / tau + model.item_tower.logit_bias(items, "conversion")
        got = model.query_vectors(queries) @ model.item_vectors(items).T / tau
        assert torch.allclose(got, logit, atol=1e-4)
        assert not torch.allclose(got, q @ c.T / tau, atol=1e-2)  # the bias does move the scores
        engagement = model.item_vectors(items, "engagement")
        assert torch.equal(engagement[:, -1], torch.zeros(len(engagement)))  # no bias on engagement
        plain = TwoTowerModel(tiny_config())
        assert tiny_config().retrieval_dim == tiny_config().embedding_dim
        assert torch.equal(plain.item_vectors(items), plain.item_tower(items))


def test_the_conversion_losses_train_the_bias_and_the_engagement_task_does_not():
    log = tiny_log(click("u1", "a", 10), click("u1", "b", 20), click("u1", "c", 30), buy("u1", "c", 31),
                   click("u2", "a", 12), click("u2", "d", 25))
    inter = interactions_from_log(log)
    labels = pd.DataFrame([lab.to_dict() for lab in compute_labels(log.events)])
    catalog = catalog_frame(inter)

    def bias_grad(rows: pd.DataFrame, **loss) -> torch.Tensor:
        config = small_config(conversion_item_bias=True, loss=LossConfig(**loss))
        model = TwoTowerModel(config)
        examples = sequence_rows(rows.reset_index(drop=True), SequenceFeatures(inter, config), catalog)
        training_loss(model, examples, TrainingSet(examples, catalog).catalog_inputs(model)).total.backward()
        grad = model.item_tower.conversion_bias.weight.grad
        return torch.zeros(()) if grad is None else grad.coalesce().values().abs().sum()

    for negatives in ("catalog", "in_batch"):
        assert bias_grad(labels, negatives=negatives) > 0
        engagement_only = labels[labels["kind"] == "engagement"]
        assert bias_grad(engagement_only, negatives=negatives, hard_negatives=False, advertiser_weight=0.0) == 0


def test_a_published_biased_model_is_served_by_its_conversion_logit(tmp_path):
    config = tiny_config(conversion_item_bias=True)
    model = biased_model(config)
    registry = ModelRegistry(tmp_path / "registry")
    version = registry.publish(model, config, {}, {})
    loaded = registry.load(version)
    catalog = synthetic_catalog(60)
    assert loaded.dim == config.embedding_dim + 1
    settings = IndexTestSettings(registry_root=tmp_path / "registry", index_root=tmp_path / "indexes",
                                 catalog_path=tmp_path / "catalog.parquet", new_items_path=tmp_path / "new.parquet")
    artifact = load_artifact(build_artifact(loaded, settings, catalog=catalog, progress=False),
                             expected_model_version=version, expected_dim=loaded.dim)
    served = ServingPair(loaded, artifact).search(loaded.embed_queries(QUERIES), 10)
    with torch.no_grad():
        items = encode_items(catalog, config)
        logit = (model.query_tower(encode_queries(queries_frame(QUERIES), config)) @ model.item_tower(items).T
                 / config.loss.temperature + model.item_tower.logit_bias(items)).numpy()
    assert len(served) == len(QUERIES) == len(logit)  # zip below must not pass on nothing served
    for row, top in zip(logit, served):
        assert [item for item, _ in top] == catalog["item_id"].to_numpy()[np.argsort(-row)[:10]].tolist()
