"""Embedding a catalog and building a FAISS index over it (pure: no files, no network).

Exact inner-product search (``IndexFlatIP``) below ``exact_max_items``; HNSW (inner product)
at or above it. Either way the index is wrapped in ``IndexIDMap2`` so results come back as the
stable int64 ids of :mod:`registry.idmap`.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from registry.serving_model import ServingModel, check_vectors

log = logging.getLogger(__name__)

EXACT = "flat_ip"
HNSW = "hnsw_ip"


@dataclass(frozen=True)
class IndexParams:
    exact_max_items: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256
    add_chunk: int = 50_000

    @classmethod
    def from_settings(cls, settings: Any) -> "IndexParams":
        return cls(exact_max_items=settings.exact_max_items, hnsw_m=settings.hnsw_m,
                   hnsw_ef_construction=settings.hnsw_ef_construction,
                   hnsw_ef_search=settings.hnsw_ef_search)

    def kind_for(self, count: int) -> str:
        return EXACT if count < self.exact_max_items else HNSW


def embed_catalog(model: ServingModel, catalog: Any, item_features: Any = None,
                  batch_size: int = 4096, progress: bool = True) -> np.ndarray:
    """Embed every catalog row with the model's item tower, in batches, with a progress bar."""
    from tqdm import tqdm

    n = len(catalog)
    out = np.empty((n, model.dim), dtype=np.float32)
    by_item = None
    if item_features is not None:
        by_item = item_features.drop_duplicates("item_id", keep="last").set_index("item_id")
    started = time.perf_counter()
    # a bar on a terminal only: in a component's log file its frames would drown the log lines
    with tqdm(total=n, desc=f"embed items ({model.version})", unit="item",
              disable=not (progress and sys.stderr.isatty())) as bar:
        for start in range(0, n, batch_size):
            part = catalog.iloc[start:start + batch_size]
            feats = None
            if by_item is not None:
                feats = by_item.loc[by_item.index.intersection(part["item_id"])].reset_index()
            vecs = model.embed_items(part, feats, batch_size=batch_size)
            out[start:start + len(part)] = check_vectors(vecs, len(part), model.dim)
            bar.update(len(part))
    elapsed = time.perf_counter() - started
    log.info("embedded %d items with model %s in %.1fs (%.0f items/s)", n, model.version, elapsed,
             n / elapsed if elapsed > 0 else float("inf"))
    return out


def build_index(vectors: np.ndarray, ids: np.ndarray, params: IndexParams, progress: bool = True):
    """A FAISS ``IndexIDMap2`` over ``vectors`` (rows) with ``ids`` (int64)."""
    from tqdm import tqdm

    from registry.faiss_lib import load_faiss

    faiss = load_faiss()
    n, dim = vectors.shape
    if len(ids) != n:
        raise ValueError(f"{n} vectors but {len(ids)} ids")
    kind = params.kind_for(n)
    if kind == EXACT:
        inner = faiss.IndexFlatIP(dim)
    else:
        inner = faiss.IndexHNSWFlat(dim, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = params.hnsw_ef_construction
        inner.hnsw.efSearch = params.hnsw_ef_search
    index = faiss.IndexIDMap2(inner)
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    started = time.perf_counter()
    with tqdm(total=n, desc=f"build {kind} index", unit="item",
              disable=not (progress and sys.stderr.isatty())) as bar:
        for start in range(0, n, params.add_chunk):
            stop = min(n, start + params.add_chunk)
            index.add_with_ids(vectors[start:stop], ids[start:stop])
            bar.update(stop - start)
    log.info("built %s index over %d x %d in %.1fs", kind, n, dim, time.perf_counter() - started)
    return index


def index_kind(index) -> str:
    from registry.faiss_lib import load_faiss

    faiss = load_faiss()
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return HNSW if isinstance(inner, faiss.IndexHNSW) else EXACT


def recall_queries(vectors: np.ndarray, count: int, seed: int = 0, noise: float = 0.5) -> np.ndarray:
    """Query vectors for measuring recall: sampled item vectors plus noise, L2-normalised
    (queries near the data, but not equal to an indexed point)."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(vectors), size=min(count, len(vectors)), replace=False)
    q = vectors[rows] + noise * rng.standard_normal((len(rows), vectors.shape[1])).astype(np.float32) \
        / np.sqrt(vectors.shape[1])
    q /= np.linalg.norm(q, axis=1, keepdims=True) + 1e-12
    return q.astype(np.float32)


def exact_top_ids(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    from registry.faiss_lib import load_faiss

    faiss = load_faiss()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, rows = flat.search(queries, k)
    return np.where(rows >= 0, ids[np.maximum(rows, 0)], -1)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of the exact top-k found by the approximate top-k."""
    hits = 0
    total = 0
    for a, e in zip(approx_ids, exact_ids):
        e = e[e >= 0]
        hits += len(np.intersect1d(a[a >= 0], e))
        total += len(e)
    return hits / total if total else 1.0


def measure_recall(index, vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> float:
    """ANN recall@k of ``index`` against exact search over the same vectors."""
    k = min(k, len(vectors))
    _, approx = index.search(queries, k)
    return recall_at_k(approx, exact_top_ids(vectors, ids, queries, k))
