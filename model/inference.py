"""Embedding with a trained model (no gradients, batched)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from model.encoding import (
    encode_items,
    encode_queries,
    encode_query_dicts,
    queries_frame,
)
from model.towers import TwoTowerModel

DEFAULT_BATCH = 4096
#: ``embed_queries`` encodes up to this many query dicts directly (``encode_query_dicts``), a
#: larger batch through a frame (``queries_frame``), whose fixed cost is then spread thin
DICT_QUERY_BATCH = 64


def eval_mode(model: TwoTowerModel) -> None:
    """``model.eval()`` unless the model is in eval mode already. ``eval()`` walks and sets every
    submodule (~0.3-0.6 ms for the conversion retriever: a fifth of one query's embedding on the
    retrieval hot path, where the served model stays in eval mode from its load on). The model
    is only ever switched as a whole (``model.train()`` / ``model.eval()`` set every submodule),
    so its own flag says which mode it is in."""
    if model.training:
        model.eval()


def item_table(catalog: pd.DataFrame, item_features: pd.DataFrame | None) -> pd.DataFrame:
    """Catalog rows (order kept) with the item's streaming feature columns joined on."""
    if "item_id" not in catalog.columns or "advertiser_id" not in catalog.columns:
        raise ValueError(f"catalog needs item_id and advertiser_id columns; has {list(catalog.columns)}")
    if item_features is None or len(item_features) == 0:
        return catalog
    if "item_id" not in item_features.columns:
        raise ValueError("item_features needs an item_id column")
    extra = item_features.drop_duplicates("item_id", keep="last")
    extra = extra[[c for c in extra.columns if c == "item_id" or c not in catalog.columns]]
    return catalog.merge(extra, on="item_id", how="left")


@torch.no_grad()
def embed_items(model: TwoTowerModel, catalog: pd.DataFrame, item_features: pd.DataFrame | None = None,
                batch_size: int = DEFAULT_BATCH, task: str = "conversion") -> np.ndarray:
    table = item_table(catalog, item_features)
    eval_mode(model)
    out = np.zeros((len(table), model.config.retrieval_dim), dtype=np.float32)
    for start in range(0, len(table), batch_size):
        chunk = table.iloc[start:start + batch_size]
        out[start:start + len(chunk)] = model.item_vectors(encode_items(chunk, model.config), task).numpy()
    return out


@torch.no_grad()
def embed_query_frame(model: TwoTowerModel, queries: pd.DataFrame, batch_size: int = DEFAULT_BATCH,
                      task: str = "conversion") -> np.ndarray:
    eval_mode(model)
    out = np.zeros((len(queries), model.config.retrieval_dim), dtype=np.float32)
    for start in range(0, len(queries), batch_size):
        chunk = queries.iloc[start:start + batch_size]
        out[start:start + len(chunk)] = model.query_vectors(encode_queries(chunk, model.config), task).numpy()
    return out


@torch.inference_mode()
def embed_query_dicts(model: TwoTowerModel, queries: list[dict], task: str = "conversion") -> np.ndarray:
    """``embed_query_frame(model, queries_frame(queries))`` without the frame: the retrieval
    service's path for its one query (``tests/model/test_query_fast_path.py`` holds them equal)."""
    eval_mode(model)
    return model.query_vectors(encode_query_dicts(queries, model.config), task).numpy()


def embed_queries(model: TwoTowerModel, queries: list[dict], task: str = "conversion") -> np.ndarray:
    """float32 ``[len(queries), dim]`` of query dicts (``model.encoding.queries_frame``)."""
    if not queries:
        return np.zeros((0, model.config.retrieval_dim), dtype=np.float32)
    if len(queries) <= DICT_QUERY_BATCH:
        return embed_query_dicts(model, queries, task)
    return embed_query_frame(model, queries_frame(queries), task=task)
