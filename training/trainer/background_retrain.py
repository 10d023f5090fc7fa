"""Retraining from scratch beside the trainer's fine-tunes.

A model trained from scratch on every stored label takes minutes once the store is large; done
inside the trainer's step it stops every fine-tune for that long, and the labels that arrive
meanwhile wait for it (model freshness). ``BackgroundRetrain`` runs that training in one
worker process (``spawn``: its own torch and interpreter, so it neither holds the trainer's GIL
nor shares torch's process-wide settings; niced by ``retrain_niceness``) on a snapshot of the
labels, while the trainer keeps consuming and fine-tuning the serving model.

A retrain that passed its gate in the worker (against the model that served when it started, on
the snapshot's held-out slice) then catches up in the worker too: it is fine-tuned on the labels
stored since its snapshot, read from the label store, until fewer than ``trigger_labels`` are
left (at most ``retrain_catch_up_rounds`` rounds). Without this, the step that collected it
fine-tuned it on every label of its minutes in the background at once, the longest step of a
run, and every label waiting behind it was that much later in a served model. The trainer
collects it at a later step, fine-tunes it on what is left (``catch_up_labels``) and publishes it
only if it is not worse than the version serving then (``training.trainer.gate``).

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

log = logging.getLogger(__name__)


@dataclass
class RetrainJob:
    """What a retrain started from: its labels (snapshot) and the model that served then."""

    base_version: str
    snapshot_label_ids: frozenset
    started: float
    started_wall: float = 0.0


@dataclass
class FinishedRetrain:
    job: RetrainJob
    #: ``training.trainer.step.FinetuneResult`` of the retrain (its ``heldout`` not trained on);
    #: its model is the caught-up one
    result: object
    seconds: float
    #: every label the caught-up model was trained on
    trained_label_ids: frozenset = frozenset()
    catch_up_rounds: int = 0


def _lower_priority(niceness: int) -> None:
    """Pool initializer: the retrain yields the cores to the stream processors and the serving
    fine-tunes (it is the one job here nobody waits on)."""
    if niceness:
        os.nice(niceness)


def _retrain_worker(settings: TrainingSettings, serving_bytes: bytes, fresh: pd.DataFrame, older: pd.DataFrame,
                    catalog: pd.DataFrame | None, base_version: str) -> bytes:
    """In the worker process: ``finetune(..., from_scratch=True)``, then ``catch_up`` if it passed
    its gate; (result, trained label ids, catch-up rounds) pickled."""
    from training.trainer.step import finetune

    serving = pickle.loads(serving_bytes)
    result = finetune(serving, fresh, older, catalog, settings, show_progress=False, base_version=base_version,
                      from_scratch=True)
    trained = set(pd.concat([fresh["label_id"], older["label_id"]])) - set(result.heldout["label_id"])
    rounds = 0
    if result.passed:
        result.model, trained, rounds = catch_up(result.model, trained, settings, base_version)
    return pickle.dumps((result, frozenset(trained), rounds))


def catch_up(model, trained: set, settings: TrainingSettings, base_version: str):
    """Fine-tune ``model`` on the stored labels it was not trained on until at most
    ``trigger_labels`` are left or ``retrain_catch_up_rounds`` rounds ran: (model, trained
    label ids, rounds)."""
    from training.learn.examples import full_catalog
    from training.trainer.label_store import LabelStore
    from training.trainer.publish import load_catalog
    from training.trainer.step import finetune

    store = LabelStore(settings.label_store)
    for rounds in range(settings.retrain_catch_up_rounds):
        everything = store.load()
        if not len(everything):
            return model, trained, rounds
        fresh = everything[~everything["label_id"].isin(trained)]
        if len(fresh) <= settings.trigger_labels:
            return model, trained, rounds
        older = everything[everything["label_id"].isin(trained)]
        catalog = load_catalog(settings)
        catalog = full_catalog(catalog, everything) if catalog is not None else None
        step = finetune(model, fresh, older, catalog, settings, show_progress=False, base_version=base_version)
        model = step.model
        trained = trained | (set(fresh["label_id"]) - set(step.heldout["label_id"]))
        log.info("background retrain caught up on %d labels stored since its snapshot (round %d)",
                 len(fresh) - len(step.heldout), rounds + 1)
    return model, trained, settings.retrain_catch_up_rounds


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
                              time.monotonic(), time.time())
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
            result, trained, rounds = pickle.loads(pending.get())
        except Exception:
            log.exception("the background retrain from %s failed after %.0f s; fine-tuning goes on",
                          job.base_version, seconds)
            return None
        return FinishedRetrain(job, result, seconds, trained, rounds)

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
    """(fresh, older) of the fine-tune that collects a retrain: fresh = every stored label its
    caught-up model was not trained on (its last held-out slice, and what arrived since);
    older = the rest."""
    trained = everything["label_id"].isin(finished.trained_label_ids)
    return everything[~trained], everything[trained]
