"""A trained two-tower model as a point-in-time ``Scorer`` (``training.pit_protocol``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.encoding import encode_items
from model.towers import TwoTowerModel
from training.pit_protocol import QueryBatch, Scorer
from training.sequence_examples import SequenceFeatures, catalog_frame


def model_scorer(model: TwoTowerModel, features: SequenceFeatures, items: pd.DataFrame | None = None) -> Scorer:
    """Scores the items (``items``, in ``features.inter``'s order; default its catalog) for a
    ``QueryBatch``: its sequence as of each query's time, by the inner product of the model's
    retrieval vectors (the index's ranking)."""
    model.eval()
    with torch.no_grad():
        encoded = encode_items(catalog_frame(features.inter) if items is None else items, model.config)
        item_vectors = {task: model.item_vectors(encoded, task).numpy() for task in ("conversion", "engagement")}

    def score(batch: QueryBatch, task: str) -> np.ndarray:
        with torch.no_grad():
            return model.query_vectors(features.for_batch(batch), task).numpy() @ item_vectors[task].T

    return score
