"""Retraining from scratch beside the trainer's fine-tunes.

A model trained from scratch on every stored label takes minutes once the store is large; done
inside the trainer's step it stops every fine-tune for that long, and the labels that arrive
meanwhile wait for it (model freshness). ``BackgroundRetrain`` runs that training in one
worker process (``spawn``: its own torch and interpreter, so it neither holds the trainer's GIL
nor shares torch's process-wide settings; niced by ``retrain_niceness``) on a snapshot of the
labels, while the trainer keeps consuming and fine-tuning the serving model. The trainer collects the result at a later step:
the candidate was gated in the worker against the model that served when it started, on the
snapshot's held-out slice (which that model had not trained on either), and is published only
if it passed; the next fine-tune then brings it up to date on every label stored since the
snapshot (``catch_up_labels``).

The worker's answer is pickled by this module (tensors copied into bytes), not sent through
torch's shared-memory reductions, so a result outlives the worker that made it.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import time
from dataclasses import dataclass

import pandas as pd

from training.config import TrainingSettings

log = logging.getLogger("convcg.training.background_retrain")


@dataclass
class RetrainJob:
    """What a retrain started from: its labels (snapshot) and the model that served then."""

    base_version: str
    snapshot_label_ids: frozenset
    started: float


@dataclass
class FinishedRetrain:
    job: RetrainJob
    #: ``training.trainer.step.FinetuneResult`` of the retrain (its ``heldout`` not trained on)
    result: object
    seconds: float


def _lower_priority(niceness: int) -> None:
    """Pool initializer: the retrain yields the cores to the stream processors and the serving
    fine-tunes (it is the one job here nobody waits on)."""
    if niceness:
        os.nice(niceness)


def _retrain_worker(settings: TrainingSettings, serving_bytes: bytes, fresh: pd.DataFrame, older: pd.DataFrame,
                    catalog: pd.DataFrame | None, base_version: str) -> bytes:
    """In the worker process: ``finetune(..., from_scratch=True)``; the result pickled."""
    from training.trainer.step import finetune

    serving = pickle.loads(serving_bytes)
    result = finetune(serving, fresh, older, catalog, settings, show_progress=False, base_version=base_version,
                      from_scratch=True)
    return pickle.dumps(result)


class BackgroundRetrain:
    """At most one retrain at a time, in a worker process started on first use."""

    def __init__(self, settings: TrainingSettings):
        self.settings = settings
        self._pool = None
        self._pending = None
        self.job: RetrainJob | None = None

    @property
    def running(self) -> bool:
        return self.job is not None

    @property
    def ready(self) -> bool:
        """A started retrain has finished and waits to be collected by ``poll``."""
        return self._pending is not None and self._pending.ready()

    def start(self, serving_model, base_version: str, fresh: pd.DataFrame, older: pd.DataFrame,
              catalog: pd.DataFrame | None) -> RetrainJob:
        if self.running:
            raise RuntimeError("a retrain is already running")
        if self._pool is None:
            self._pool = multiprocessing.get_context("spawn").Pool(
                1, initializer=_lower_priority, initargs=(self.settings.retrain_niceness,))
        self.job = RetrainJob(base_version, frozenset(pd.concat([fresh["label_id"], older["label_id"]])),
                              time.monotonic())
        self._pending = self._pool.apply_async(_retrain_worker, (self.settings, pickle.dumps(serving_model), fresh,
                                                                 older, catalog, base_version))
        log.info("retraining from scratch in the background on %d labels (serving %s)",
                 len(self.job.snapshot_label_ids), base_version)
        return self.job

    def poll(self) -> FinishedRetrain | None:
        """The finished retrain, once (None while it runs or when none was started); a retrain
        that failed in the worker is logged and dropped."""
        if self._pending is None or not self._pending.ready():
            return None
        job, pending = self.job, self._pending
        self.job, self._pending = None, None
        seconds = time.monotonic() - job.started
        try:
            result = pickle.loads(pending.get())
        except Exception:
            log.exception("the background retrain from %s failed after %.0f s; fine-tuning goes on",
                          job.base_version, seconds)
            return None
        return FinishedRetrain(job, result, seconds)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the running retrain finishes (at most ``timeout`` s); True if one is ready."""
        if self._pending is not None:
            self._pending.wait(timeout)
        return self.ready

    def close(self) -> None:
        """Stop the worker; a retrain still running is abandoned (the labels stay stored: a
        restarted trainer finds the retrain due again)."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None
        self.job, self._pending = None, None


def catch_up_labels(finished: FinishedRetrain, everything: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fresh, older) of the fine-tune that follows a published retrain: fresh = the retrain's
    held-out slice plus every label stored after its snapshot; older = the rest."""
    heldout = finished.result.heldout
    after = ~everything["label_id"].isin(finished.job.snapshot_label_ids)
    fresh = pd.concat([heldout, everything[after]], ignore_index=True).drop_duplicates("label_id")
    older = everything[~everything["label_id"].isin(fresh["label_id"])]
    return fresh, older
