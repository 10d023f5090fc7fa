"""Graded results of an evaluation run kept on disk, so a long ``convcg eval --resume`` picks
up where an interrupted one stopped (an ML-1M training takes ~30 min on one core here).

One entry per graded thing (the baselines of a split, or one model variant at one seed): its
metrics, its per-query hits (what the paired bootstrap resamples) and a little metadata (the
baselines' validation choices, a model's epochs and seconds). The key is a digest of
everything the result depends on that a run can see: the dataset, the data themselves
(labels and interactions fingerprinted), the split, the protocol and baseline settings, the
model config, the training settings with the seed, and the label row filter. The code is not
part of the key: resume only across runs of the same code.

Entries are written atomically (temporary file, then rename), so an interrupted write leaves
no entry rather than a torn one.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def frame_fingerprint(frame: pd.DataFrame | None) -> str:
    """A digest of a frame's values and column names (row order matters); ``"none"`` for None."""
    if frame is None:
        return "none"
    digest = hashlib.sha256(",".join(map(str, frame.columns)).encode())
    row_hashes = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    digest.update(row_hashes.tobytes())
    return digest.hexdigest()[:32]


def result_key(**parts: Any) -> str:
    """Digest of JSON-able parts (pydantic models dumped first); order of the keywords is free."""
    def plain(value: Any) -> Any:
        if hasattr(value, "model_dump"):
            return value.model_dump(mode="json")
        return value

    text = json.dumps({k: plain(v) for k, v in parts.items()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class GradedResult:
    """Metrics and per-query hit arrays (name -> array) of one graded entry, plus its metadata."""

    metrics: dict[str, dict[str, float]]
    hits: dict[str, np.ndarray]
    meta: dict[str, Any]


def _compact(hits: np.ndarray) -> np.ndarray:
    """0/1 hits as bytes (an ML-1M model's 41k queries: 41 kB instead of 330 kB)."""
    return hits.astype(np.uint8) if np.isin(hits, (0.0, 1.0)).all() else hits


def _json_scalar(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


class GradedRunStore:
    """``root/<key>.npz``: one entry per key (see the module docstring)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / f"{key}.npz"

    def get(self, key: str) -> GradedResult | None:
        path = self.path(key)
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(bytes(data["header"]).decode())
            hits = {name: data[f"hits/{name}"].astype(np.float64) for name in header["hit_names"]}
        return GradedResult(metrics=header["metrics"], hits=hits, meta=header["meta"])

    def put(self, key: str, result: GradedResult) -> Path:
        header = {"metrics": result.metrics, "meta": result.meta, "hit_names": sorted(result.hits)}
        text = json.dumps(header, default=_json_scalar)
        arrays = {f"hits/{name}": _compact(np.asarray(h)) for name, h in result.hits.items()}
        buffer = io.BytesIO()
        np.savez(buffer, header=np.frombuffer(text.encode(), dtype=np.uint8), **arrays)
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(key)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, path)
        return path


class NoGradedRuns:
    """The store of a run without ``--resume``: remembers nothing."""

    def get(self, key: str) -> GradedResult | None:
        return None

    def put(self, key: str, result: GradedResult) -> None:
        return None
