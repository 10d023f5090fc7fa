"""The serving pair (model version + its index) and the holder that swaps it atomically.

Readers take ``state.current`` once (a single reference read) and use that pair for the whole
query, so a query never mixes versions and never waits on a lock. Writers (swap, rollback,
incremental add) serialise on a lock, build a new immutable pair beside the old one and publish
it with one reference assignment. In-flight queries keep their reference to the old pair, which
is released (garbage-collected) once the last of them finishes.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from registry.index_artifact import IndexArtifact
from registry.serving_model import ServingModel, check_vectors

log = logging.getLogger(__name__)

#: FAISS OpenMP threads per search. OpenMP's thread count is a per-thread setting, so it is
#: applied lazily in every thread that searches (the HTTP server's worker threads), not once.
_search_threads = 1
_thread_state = threading.local()


def configure_search_threads(n: int) -> None:
    global _search_threads
    _search_threads = max(1, int(n))


def _apply_search_threads() -> None:
    if getattr(_thread_state, "omp_threads", None) != _search_threads:
        from registry.faiss_lib import load_faiss

        faiss = load_faiss()
        faiss.omp_set_num_threads(_search_threads)
        _thread_state.omp_threads = _search_threads


@dataclass(frozen=True)
class DeltaItems:
    """Items added after the index was built: exact search over a small matrix (copy-on-write)."""

    item_ids: tuple[str, ...] = ()
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    rows: tuple[dict, ...] = ()  # catalog rows, kept to re-embed them with a new model version
    id_set: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(self.item_ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self.id_set

    def with_added(self, rows: Sequence[dict], vectors: np.ndarray) -> "DeltaItems":
        old = self.vectors if len(self) else np.zeros((0, vectors.shape[1]), dtype=np.float32)
        merged = np.ascontiguousarray(np.vstack([old, vectors]), dtype=np.float32)
        merged.setflags(write=False)
        added = tuple(r["item_id"] for r in rows)
        return DeltaItems(item_ids=self.item_ids + added, vectors=merged,
                          rows=self.rows + tuple(dict(r) for r in rows), id_set=self.id_set | set(added))

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the top-k delta items per query; rows -1 where fewer than k."""
        n = len(self)
        scores = queries @ self.vectors.T if n else np.zeros((len(queries), 0), dtype=np.float32)
        kk = min(k, n)
        if kk == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        top = np.argpartition(-scores, kk - 1, axis=1)[:, :kk]
        return np.take_along_axis(scores, top, axis=1), top


@dataclass(frozen=True, eq=False)
class ServingPair:
    """One model version and the index built with it; never mutated after creation."""

    model: ServingModel
    artifact: IndexArtifact
    delta: DeltaItems = field(default_factory=DeltaItems)
    loaded_at: float = field(default_factory=time.time)

    @property
    def model_version(self) -> str:
        return self.artifact.model_version

    @property
    def index_version(self) -> str:
        return self.artifact.index_version

    @property
    def size(self) -> int:
        return self.artifact.count + len(self.delta)

    def has_item(self, item_id: str) -> bool:
        return item_id in self.delta or self.artifact.idmap.contains(item_id)

    def search(self, queries: np.ndarray, k: int) -> list[list[tuple[str, float]]]:
        """Top-k (item_id, score) per query over the index and the incrementally added items."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        _apply_search_threads()
        scores, ids = self.artifact.index.search(queries, k)
        out: list[list[tuple[str, float]]] = []
        dscores, drows = self.delta.search(queries, k)
        for qi in range(len(queries)):
            names = self.artifact.idmap.item_ids_of(ids[qi])
            hits = [(n, float(s)) for n, s in zip(names, scores[qi].tolist()) if n is not None]
            if drows.shape[1]:
                hits += [(self.delta.item_ids[r], float(s)) for r, s in zip(drows[qi].tolist(), dscores[qi].tolist())]
                hits.sort(key=lambda h: -h[1])
                hits = hits[:k]
            out.append(hits)
        return out

    def with_added(self, rows: Sequence[dict], vectors: np.ndarray) -> "ServingPair":
        return ServingPair(model=self.model, artifact=self.artifact,
                           delta=self.delta.with_added(rows, vectors), loaded_at=self.loaded_at)

    def embed_rows(self, rows: Sequence[dict]) -> np.ndarray:
        import pandas as pd

        vecs = self.model.embed_items(pd.DataFrame(list(rows)))
        return check_vectors(np.asarray(vecs), len(rows), self.model.dim, "new item embeddings")


def _carry_over(old: ServingPair | None, new: ServingPair) -> ServingPair:
    """``new`` plus the incrementally added items of ``old`` it lacks, embedded by its model."""
    if old is None or not len(old.delta):
        return new
    carry = [r for r in old.delta.rows if not new.has_item(r["item_id"])]
    return new.with_added(carry, new.embed_rows(carry)) if carry else new


class NoServingPair(RuntimeError):
    pass


class ServingState:
    """Holds the current and previous serving pairs. Reads are lock-free."""

    def __init__(self, on_change: Callable[["ServingPair", str], None] | None = None,
                 on_release: Callable[[str, str], None] | None = None):
        self._current: ServingPair | None = None
        self._previous: ServingPair | None = None
        self._write_lock = threading.Lock()
        self._on_change = on_change
        self._on_release = on_release

    @property
    def current(self) -> ServingPair | None:
        return self._current

    @property
    def previous(self) -> ServingPair | None:
        return self._previous

    def _publish(self, pair: ServingPair, previous: ServingPair | None, kind: str) -> None:
        displaced = self._previous if kind == "load" else None
        self._previous = previous
        self._current = pair  # the one atomic switch readers see
        if displaced is not None and displaced is not pair and self._on_release is not None:
            weakref.finalize(displaced, self._on_release, displaced.model_version, displaced.index_version)
        if self._on_change is not None:
            self._on_change(pair, kind)

    def install(self, pair: ServingPair) -> ServingPair:
        """Swap ``pair`` in; items added incrementally to the old pair are re-embedded with the
        new model and carried over, so they stay retrievable."""
        with self._write_lock:
            old = self._current
            pair = _carry_over(old, pair)
            self._publish(pair, old, "load")
        log.info("serving model %s / index %s (%d items)%s", pair.model_version, pair.index_version,
                 pair.size, f", previous {old.model_version}/{old.index_version}" if old else "")
        return pair

    def rollback(self) -> ServingPair:
        """Serve the previous pair again (the current one becomes the previous)."""
        with self._write_lock:
            if self._previous is None:
                raise NoServingPair("no previous serving pair to roll back to")
            old = self._current
            pair = _carry_over(old, self._previous)
            self._publish(pair, old, "rollback")
        log.warning("rolled back to model %s / index %s", pair.model_version, pair.index_version)
        return pair

    def add_items(self, rows: Sequence[dict]) -> tuple[ServingPair, int]:
        """Embed items not yet served with the serving model and add them (copy-on-write)."""
        with self._write_lock:
            pair = self._current
            if pair is None:
                raise NoServingPair("no serving pair loaded")
            seen: set[str] = set()
            fresh = []
            for r in rows:
                if r["item_id"] not in seen and not pair.has_item(r["item_id"]):
                    seen.add(r["item_id"])
                    fresh.append(r)
            if not fresh:
                return pair, 0
            new = pair.with_added(fresh, pair.embed_rows(fresh))
            self._current = new
            if self._on_change is not None:
                self._on_change(new, "add")
        log.info("added %d new items to model %s / index %s (now %d items)", len(fresh),
                 new.model_version, new.index_version, new.size)
        return new, len(fresh)
