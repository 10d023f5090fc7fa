"""Small genuinely trained models for tests (train in seconds)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from model.config import ModelConfig, TowerConfig
from registry.store import ModelRegistry


def tiny_config(**overrides) -> ModelConfig:
    """A small model for tests and quick demos (trains in seconds)."""
    tower = TowerConfig(cross_layers=1, mlp_layers=1, mlp_width=32)
    base = dict(embedding_dim=16, id_dim=8, user_buckets=512, item_buckets=1024, advertiser_buckets=128,
                category_buckets=64, recent_items=5, query_tower=tower, item_tower=tower)
    base.update(overrides)
    return ModelConfig(**base)


def train_tiny_model_for_tests(root: Path | str, catalog: pd.DataFrame, seed: int = 0,
                               n_users: int = 40, n_labels: int = 600) -> str:
    """Train a small real model on synthetic labels over ``catalog`` (a few seconds) and
    publish it into the registry at ``root``. Returns the version id. For other components'
    tests that need a genuine published version."""
    from training.synthetic import synthetic_labels
    from training.trainer.step import train_full

    labels = synthetic_labels(catalog, n_users=n_users, n_labels=n_labels, seed=seed)
    result = train_full(labels, catalog, tiny_config(), epochs=2, batch_size=128, seed=seed,
                        evaluate_holdout=False, show_progress=False)
    return ModelRegistry(root).publish(result.model, result.model.config, result.metrics, result.data_range)
