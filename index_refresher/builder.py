"""Building a versioned index artifact for one model version (catalog file -> artifact folder)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from index_refresher.index_build import (
    EXACT,
    IndexParams,
    build_index,
    embed_catalog,
    measure_recall,
    recall_queries,
)
from registry.idmap import IdMap, stable_ids
from registry.index_artifact import write_artifact
from registry.serving_model import ServingModel

log = logging.getLogger(__name__)

CATALOG_COLUMNS = ("item_id", "advertiser_id", "category", "price")


class BuildError(RuntimeError):
    pass


def read_catalog(catalog_path: Path, new_items_path: Path | None = None):
    """The catalog parquet plus items first seen on the impressions topic (catalog rows win)."""
    import pandas as pd

    if not Path(catalog_path).is_file():
        raise BuildError(f"catalog {catalog_path} not found")
    catalog = pd.read_parquet(catalog_path)
    missing = {"item_id", "advertiser_id"} - set(catalog.columns)
    if missing:
        raise BuildError(f"catalog {catalog_path} lacks columns {sorted(missing)}")
    if new_items_path is not None and Path(new_items_path).is_file():
        extra = pd.read_parquet(new_items_path)
        extra = extra[~extra["item_id"].isin(catalog["item_id"])]
        if len(extra):
            log.info("adding %d items first seen on the impressions topic to the catalog", len(extra))
            catalog = pd.concat([catalog, extra], ignore_index=True)
    catalog = catalog.drop_duplicates("item_id", keep="first").reset_index(drop=True)
    catalog["item_id"] = catalog["item_id"].astype(str)
    catalog["advertiser_id"] = catalog["advertiser_id"].astype(str)
    return catalog


def build_from_vectors(index_root: Path, model_version: str, item_ids, vectors: np.ndarray,
                       params: IndexParams, recall_sample: int, recall_k: int, min_recall: float,
                       seed: int = 0, progress: bool = True, extra: dict[str, Any] | None = None) -> Path:
    """Index ``vectors`` (rows aligned with ``item_ids``), measure ANN recall, write the artifact."""
    item_ids = [str(i) for i in item_ids]
    idmap = IdMap.from_item_ids(item_ids)  # refuses duplicates / hash collisions
    ids = stable_ids(item_ids)
    started = time.perf_counter()
    index = build_index(vectors, ids, params, progress=progress)
    build_seconds = time.perf_counter() - started
    kind = params.kind_for(len(item_ids))
    recall = None
    if kind != EXACT:
        queries = recall_queries(vectors, recall_sample, seed=seed)
        recall = measure_recall(index, vectors, ids, queries, recall_k)
        log.info("ANN recall@%d against exact search on %d sample queries: %.4f", recall_k, len(queries), recall)
        if recall < min_recall:
            raise BuildError(f"ANN recall@{recall_k} {recall:.3f} is below the minimum {min_recall}: "
                             "raise hnsw_ef_search / hnsw_ef_construction or use exact search")
    return write_artifact(index_root, model_version, index, idmap, kind=kind, recall=recall,
                          recall_k=recall_k, build_seconds=build_seconds, extra=extra)


def build_artifact(model: ServingModel, settings, catalog=None, progress: bool = True) -> Path:
    """Embed the catalog with ``model``'s item tower and write an index artifact beside it."""
    if catalog is None:
        catalog = read_catalog(settings.catalog_path, settings.new_items_path)
    if len(catalog) == 0:
        raise BuildError("catalog is empty: nothing to index")
    started = time.perf_counter()
    vectors = embed_catalog(model, catalog, batch_size=settings.embed_batch_size, progress=progress)
    embed_seconds = time.perf_counter() - started
    return build_from_vectors(settings.index_root, model.version, catalog["item_id"].tolist(), vectors,
                              IndexParams.from_settings(settings), settings.recall_sample_queries,
                              settings.recall_k, settings.min_recall, settings.seed, progress,
                              extra={"embed_seconds": round(embed_seconds, 3),
                                     "embed_items_per_s": round(len(catalog) / max(embed_seconds, 1e-9), 1)})
