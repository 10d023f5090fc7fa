"""Loading a serving pair (model version + verified index artifact) beside the serving one.

The work (model load, checksum, index read, warm-up query) runs in a background thread at
lowered CPU priority, never on the query path; only the final reference swap touches the
serving state. A refused load (corrupt artifact, wrong dimension, version mismatch, bad model)
leaves the current pair serving and is counted in ``refused_artifacts`` with its reason.
"""

from __future__ import annotations

import gc
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from pathlib import Path

from registry.index_artifact import ArtifactError, find_artifact, load_artifact
from registry.serving_model import ModelLoader
from retrieval.metrics import RetrievalMetrics
from retrieval.serving import ServingPair, ServingState

log = logging.getLogger(__name__)

#: model version (None: the registry's current one) -> loaded model

LOADER_NICENESS = 10
WARMUP_QUERY = {"user_id": "__warmup__", "surface": "home"}


class LoadRefused(RuntimeError):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


class LoaderBusy(RuntimeError):
    pass


@dataclass
class LoadResult:
    ok: bool
    model_version: str | None
    index_version: str | None
    seconds: float
    reason: str = ""
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _lower_thread_priority() -> None:
    try:  # Linux: a thread is a task, so this lowers only the loader thread
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), LOADER_NICENESS)
    except (OSError, AttributeError):
        pass


class PairLoader:
    def __init__(self, state: ServingState, model_loader: ModelLoader, index_root: Path,
                 metrics: RetrievalMetrics):
        self.state = state
        self.model_loader = model_loader
        self.index_root = Path(index_root)
        self.metrics = metrics
        self._busy = threading.Lock()
        self.last: LoadResult | None = None

    def prepare(self, model_version: str | None, index_version: str | None = None) -> ServingPair:
        """Load and verify a pair without serving it. Raises LoadRefused."""
        try:
            model = self.model_loader(model_version)
        except Exception as exc:  # registry.store.RegistryError and friends
            raise LoadRefused("model", f"model version {model_version or '(current)'} refused: {exc}") from exc
        if model_version is not None and model.version != model_version:
            raise LoadRefused("version_mismatch", f"asked for model {model_version}, registry gave {model.version}")
        try:
            path = find_artifact(self.index_root, model.version, index_version)
            artifact = load_artifact(path, expected_model_version=model.version, expected_dim=model.dim)
        except ArtifactError as exc:
            raise LoadRefused(exc.reason, str(exc)) from exc
        pair = ServingPair(model=model, artifact=artifact)
        try:  # warm up: first query pays lazy initialisation here, not on the serving path
            q = model.embed_queries([dict(WARMUP_QUERY)])
            pair.search(q, min(10, max(1, pair.size)))
        except Exception as exc:
            raise LoadRefused("warmup", f"warm-up query on {model.version}/{artifact.index_version} failed: {exc}") from exc
        return pair

    def load(self, model_version: str | None = None, index_version: str | None = None) -> LoadResult:
        """Prepare a pair and swap it in (synchronously, in the calling thread)."""
        if not self._busy.acquire(blocking=False):
            raise LoaderBusy("another load is in progress")
        try:
            return self._load_locked(model_version, index_version)
        finally:
            self._busy.release()

    def _load_locked(self, model_version: str | None, index_version: str | None) -> LoadResult:
        started = time.perf_counter()
        try:
            pair = self.prepare(model_version, index_version)
        except LoadRefused as exc:
            self.metrics.refused_artifacts.labels(exc.reason).inc()
            current = self.state.current
            log.error("refused to load %s/%s (%s): %s; still serving %s", model_version or "(current)",
                      index_version or "(latest)", exc.reason, exc,
                      f"{current.model_version}/{current.index_version}" if current else "nothing")
            self.last = LoadResult(False, model_version, index_version, time.perf_counter() - started,
                                   reason=exc.reason, error=str(exc))
            return self.last
        pair = self.state.install(pair)
        # Move everything alive now (libraries, the new pair) out of the cyclic GC's reach: a full
        # collection over a heap with pandas/pyarrow/torch loaded holds the GIL for tens of
        # milliseconds, a stall for every in-flight query. Refcounting still frees the old pairs.
        gc.freeze()
        seconds = time.perf_counter() - started
        self.metrics.swap_duration.observe(seconds)
        self.last = LoadResult(True, pair.model_version, pair.index_version, seconds)
        return self.last

    def load_in_background(self, model_version: str | None = None,
                           index_version: str | None = None) -> Future:
        """Start a load in a low-priority thread; the future resolves to a LoadResult."""
        if not self._busy.acquire(blocking=False):
            raise LoaderBusy("another load is in progress")
        future: Future = Future()

        def run() -> None:
            _lower_thread_priority()
            try:
                future.set_result(self._load_locked(model_version, index_version))
            except BaseException as exc:  # noqa: BLE001 - surfaced through the future
                log.exception("index load failed")
                future.set_exception(exc)
            finally:
                self._busy.release()

        threading.Thread(target=run, name="index-loader", daemon=True).start()
        return future
