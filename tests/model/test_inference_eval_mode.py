"""Embedding puts a training model in eval mode (no dropout), and leaves an eval one alone
(``model.eval()`` walks every submodule: a fifth of a served query's embedding)."""

from __future__ import annotations

import numpy as np
import torch

from model.inference import embed_query_frame
from model.towers import TwoTowerModel
from training.learn.recipes import retriever_config
from training.synthetic import synthetic_catalog


def _queries():
    import pandas as pd

    items = synthetic_catalog(50)["item_id"].tolist()
    return pd.DataFrame({"user_id": ["u1", "u2"], "surface": ["home", "home"],
                         "recent_items": [items[:30], items[10:15]]})


def test_a_training_model_is_embedded_in_eval_mode():
    torch.manual_seed(0)
    model = TwoTowerModel(retriever_config(item_buckets=100)).train()  # dropout 0.2 in the sequence
    first = embed_query_frame(model, _queries())
    assert not model.training and not any(m.training for m in model.modules())
    np.testing.assert_array_equal(first, embed_query_frame(model, _queries()))


def test_an_eval_model_is_not_switched_again(monkeypatch):
    torch.manual_seed(0)
    model = TwoTowerModel(retriever_config(item_buckets=100)).eval()
    calls = []
    monkeypatch.setattr(model, "eval", lambda: calls.append(1) or model)
    embed_query_frame(model, _queries())
    assert calls == []
