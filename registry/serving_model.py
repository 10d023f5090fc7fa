"""What an index builder or a retrieval server needs from a loaded model version, and the
loader that reads one from the registry (the model's modules are :mod:`model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np


class ServingModel(Protocol):
    """What the index and the retrieval service need from a model version
    (``registry.store.LoadedModel`` is one)."""

    version: str
    dim: int

    def embed_items(self, catalog: Any, item_features: Any = None, batch_size: int = 4096) -> np.ndarray: ...

    def embed_queries(self, queries: list[dict]) -> np.ndarray: ...


def check_vectors(vectors: np.ndarray, count: int, dim: int, what: str = "item embeddings") -> np.ndarray:
    """Refuse embeddings of the wrong shape or with NaN/inf; return them as C-contiguous float32."""
    if vectors.ndim != 2 or vectors.shape != (count, dim):
        raise ValueError(f"{what}: expected shape ({count}, {dim}), got {vectors.shape}")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if not np.isfinite(vectors).all():
        raise ValueError(f"{what}: contains NaN or inf")
    return vectors


#: version (None = current) -> a loaded model version
ModelLoader = Callable[[str | None], ServingModel]


def registry_model_loader(registry_root: Path) -> ModelLoader:
    """Model versions from the registry at ``registry_root`` (imported lazily: torch)."""

    def load(version: str | None) -> ServingModel:
        from registry.store import ModelRegistry

        return ModelRegistry(Path(registry_root)).load(version)

    return load
