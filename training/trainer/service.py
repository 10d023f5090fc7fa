"""The trainer service: consume the labels topic, fine-tune when enough arrived.

* Labels are deduplicated on ``label_id`` (the topic is at-least-once), against everything
  this trainer has stored before, so a redelivery or a restart changes nothing.
* An undecodable or incomplete label goes to the dead-letter topic with its reason.
* When ``trigger_labels`` new labels have arrived or ``trigger_seconds`` passed since the last
  step (and there is at least one new label), the step first takes the labels already waiting
  on the topic (up to ``max_step_labels``: a trainer behind the stream catches up in one step),
  the new labels are stored, then: a full training
  if the registry is empty (once ``min_labels_first_train`` labels exist), else one fine-tune
  step of the current version, published only if the quality gate passes. The held-out slice
  of a step is trained on in the next one. Offsets are committed after the labels are stored.
* When a retrain from scratch is due (``retrain_growth``) it runs in a worker process
  (``training.trainer.background_retrain``), and catches up there, while the steps go on
  fine-tuning; the step after it finishes fine-tunes it on the labels left and publishes it if
  it is not worse than the version serving then (``training.trainer.gate``).
* The stored labels are read from disk once; each step appends its new ones in memory, keeping
  the newest ``max_labels_in_memory``. The versions plot is redrawn at most every
  ``plot_interval_s``, off the path from a label to a served model.
"""

from __future__ import annotations

import logging
import threading
import time

import pandas as pd
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from convcg.contract import LABEL_FIELDS, MetricNames, Topics
from convcg.dedupe import SeenWithinHorizon
from convcg.validation import InvalidLabel, dead_letter, decode_label
from registry.store import ModelRegistry
from training.config import TrainingSettings
from training.learn.examples import full_catalog
from training.trainer.background_retrain import (
    BackgroundRetrain,
    FinishedRetrain,
    catch_up_labels,
)
from training.trainer.label_store import PARTITION_COLUMN, LabelStore
from training.trainer.plots import plot_versions
from training.trainer.publish import (
    StepOutcome,
    finetune_step,
    full_training_step,
    labels_at_last_scratch_training,
    load_catalog,
    publish_result,
    retrain_due,
)
from training.trainer.step import finetune

log = logging.getLogger(__name__)
POLL_MS = 500
DEAD_LETTER_COMPONENT = "trainer"
MAX_POLL_RECORDS = 5000


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter(MetricNames.LABELS_TRAINED_ON, "new labels accepted", registry=r)
        self.duplicates = Counter(MetricNames.LABELS_REDELIVERED, "redelivered labels ignored", registry=r)
        self.too_old = Counter("convcg_trainer_labels_too_old",
                               "labels older than the dedupe horizon of their partition, not taken", registry=r)
        self.invalid = Counter("convcg_trainer_labels_invalid", "labels sent to the dead-letter topic",
                               registry=r)
        self.steps = Counter("convcg_trainer_steps", "training steps by outcome", ["outcome"], registry=r)
        self.step_seconds = Histogram("convcg_trainer_step_seconds", "duration of a training step",
                                      buckets=(1, 5, 15, 30, 60, 120, 300, 900), registry=r)
        self.pending = Gauge(MetricNames.TRAINER_PENDING, "labels waiting for the next step", registry=r)
        self.retraining = Gauge(MetricNames.TRAINER_RETRAINING, "1 while a retrain from scratch runs in the background",
                                registry=r)
        self.stepping = Gauge(MetricNames.TRAINER_STEPPING, "1 while a training step runs", registry=r)


class TrainerService:
    def __init__(self, settings: TrainingSettings, show_progress: bool = False):
        self.settings = settings
        self.topics = Topics(prefix=settings.kafka.topic_prefix)
        self.store = LabelStore(settings.label_store)
        self.registry = ModelRegistry(settings.registry_root)
        self.metrics = TrainerMetrics()
        self.show_progress = show_progress
        self.seen = SeenWithinHorizon(settings.dedupe_horizon_s)
        for partition, label_id, label_ts in self.store.recent_label_ids(settings.dedupe_horizon_s):
            self.seen.add(partition, label_id, label_ts)
        self.pending: list[dict] = []
        #: held-out rows of the last step, trained on in the next one (already stored)
        self.carried: pd.DataFrame = pd.DataFrame()
        #: labels stored at the last training from scratch (published or not)
        self.at_last_scratch = labels_at_last_scratch_training(self.registry)
        self.last_step = time.monotonic()
        #: wall time the due step began taking its labels (kept in each version's data range)
        self.step_started_wall: float | None = None
        self.last_plot = -float("inf")
        self._labels: pd.DataFrame | None = None  # the stored labels, newest max_labels_in_memory
        self.stored_count = 0  # every label stored, kept in memory or not
        self.outcomes: list[StepOutcome] = []
        self.retrainer = BackgroundRetrain(settings) if settings.retrain_in_background else None
        self._consumer = None
        self._producer = None
        log.info("trainer: %d labels already stored, registry %s current=%s", len(self.seen),
                 settings.registry_root, self.registry.current_version())

    # --- Kafka ----------------------------------------------------------------------------

    def _connect(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from convcg.kafka.io import json_producer

        s = self.settings
        conf = {"bootstrap.servers": s.kafka.bootstrap, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                "max.partition.fetch.bytes": 8 * 1024 * 1024,
                "group.id": s.consumer_group or "convcg-trainer-reader"}
        self._consumer = Consumer(conf)
        if s.consumer_group:
            self._consumer.subscribe([self.topics.labels])
        else:  # no group: read every partition from the start; dedup makes replays harmless
            metadata = self._consumer.list_topics(self.topics.labels, timeout=10).topics.get(self.topics.labels)
            parts = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
            self._consumer.assign([TopicPartition(self.topics.labels, p, OFFSET_BEGINNING) for p in parts])
        self._producer = json_producer(s.kafka.bootstrap)

    def _commit(self) -> None:
        from confluent_kafka import KafkaError, KafkaException

        try:
            self._consumer.commit(asynchronous=False)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError._NO_OFFSET:  # nothing consumed since the last commit
                raise

    def close(self) -> None:
        if self.retrainer is not None:
            self.retrainer.close()
            self.metrics.retraining.set(0)
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()

    def _dead_letter(self, raw: bytes, detail: str, partition: int, offset: int | None) -> None:
        self.metrics.invalid.inc()
        log.warning("label sent to dead letters: %s", detail)
        self._producer.send(self.topics.dead_letters, dead_letter(DEAD_LETTER_COMPONENT, self.topics.labels, partition,
                                                                  offset, raw, "invalid_label", detail, time.time()))

    def accept(self, raw: bytes, partition: int = -1, offset: int | None = None) -> bool:
        """Take one raw label message (read at ``partition``/``offset``); True if it was new."""
        try:
            label = decode_label(raw).to_dict()
        except InvalidLabel as exc:
            self._dead_letter(raw, str(exc), partition, offset)
            return False
        too_old = self.seen.too_old
        if not self.seen.add(partition, label["label_id"], label["label_ts"]):
            if self.seen.too_old > too_old:
                self.metrics.too_old.inc()
                log.warning("label %s is older than the dedupe horizon of its partition: not taken",
                            label["label_id"])
            else:
                self.metrics.duplicates.inc()
            return False
        label[PARTITION_COLUMN] = partition
        self.pending.append(label)
        self.metrics.consumed.inc()
        return True

    def poll_once(self, max_records: int = MAX_POLL_RECORDS, timeout_s: float = POLL_MS / 1000) -> tuple[int, int]:
        """One consume: (messages read, labels accepted)."""
        if self._consumer is None:
            self._connect()
        messages = self._consumer.consume(max_records, timeout=timeout_s)
        new = sum(self.accept(m.value(), m.partition(), m.offset()) for m in messages if m.error() is None)
        self.metrics.pending.set(len(self.pending))
        return len(messages), new

    # --- training -------------------------------------------------------------------------

    def due(self) -> bool:
        if self.retrainer is not None and self.retrainer.ready:
            return True  # collect it now: publish and catch it up
        if not self.pending:
            return False
        s = self.settings
        return len(self.pending) >= s.trigger_labels or time.monotonic() - self.last_step >= s.trigger_seconds

    def take_waiting_labels(self) -> int:
        """Consume the labels already on the topic, up to ``max_step_labels`` pending: the
        step about to run trains on the whole backlog."""
        taken = 0
        while (room := self.settings.max_step_labels - len(self.pending)) > 0:
            read, accepted = self.poll_once(min(MAX_POLL_RECORDS, room), timeout_s=0.05)
            if not read:
                break
            taken += accepted
        return taken

    def step(self) -> StepOutcome | None:
        """Store the pending labels, then train (full if no model yet) or fine-tune."""
        self.metrics.stepping.set(1)
        try:
            return self._step()
        finally:
            self.metrics.stepping.set(0)

    def _stored_labels(self, new: pd.DataFrame) -> pd.DataFrame:
        """Every stored label (the newest ``max_labels_in_memory``), ``new`` included: read
        from disk once, then appended to."""
        if self._labels is None:
            self._labels = self.store.load()
            self.stored_count = len(self._labels)
        else:
            self._labels = pd.concat([self._labels, new], ignore_index=True) if len(new) else self._labels
            self.stored_count += len(new)
        cap = self.settings.max_labels_in_memory
        if len(self._labels) > cap:
            self._labels = self._labels.sort_values("label_ts", kind="stable").iloc[-cap:].reset_index(drop=True)
        return self._labels

    def _step(self) -> StepOutcome | None:
        started_wall = self.step_started_wall or time.time()
        self.step_started_wall = None
        new = pd.DataFrame(self.pending, columns=list(LABEL_FIELDS))
        self.store.append(pd.DataFrame(self.pending, columns=[*LABEL_FIELDS, PARTITION_COLUMN]))
        if self._producer is not None:
            self._producer.flush()  # dead letters acknowledged before the offsets covering them commit
        if self.settings.consumer_group and self._consumer is not None:
            self._commit()
        self.pending = []
        self.last_step = time.monotonic()
        self.metrics.pending.set(0)
        everything = self._stored_labels(new)
        catalog = load_catalog(self.settings)
        catalog = full_catalog(catalog, everything) if catalog is not None else None
        started = time.perf_counter()
        if self.registry.current_version() is None:
            if len(everything) < self.settings.min_labels_first_train:
                log.info("%d labels stored, waiting for %d before the first training", len(everything),
                         self.settings.min_labels_first_train)
                self.metrics.steps.labels(outcome="waiting").inc()
                return None
            outcome = full_training_step(self.settings, everything, catalog, self.show_progress,
                                         step_started_at=started_wall, plot=False)
            self.carried = pd.DataFrame()
            self.at_last_scratch = self.stored_count
            return self._record(outcome, started)
        fresh = pd.concat([self.carried, new], ignore_index=True) if len(self.carried) else new
        older = everything[~everything["label_id"].isin(fresh["label_id"])]
        finished = self.retrainer.poll() if self.retrainer is not None else None
        collected = None
        if finished is not None:
            self.metrics.retraining.set(0)
            collected = self._collect_retrain(finished, everything, catalog, started_wall)
            if collected is not None:
                self.carried = collected.heldout if collected.heldout is not None else pd.DataFrame()
                fresh = pd.concat([self.carried, new], ignore_index=True) if len(new) else self.carried
                older = everything[~everything["label_id"].isin(fresh["label_id"])]
        # one retrain at a time: while one runs, a due one waits for a later step (the step that
        # collects one may start the next: the stream may have ended, with no later step)
        running = self.retrainer is not None and self.retrainer.running
        scratch = not running and retrain_due(self.settings, self.stored_count, self.at_last_scratch)
        if scratch:
            log.info("%d labels stored, %.1fx the %d of the last model trained from scratch: retraining%s",
                     self.stored_count, self.stored_count / max(self.at_last_scratch, 1), self.at_last_scratch,
                     " in the background" if self.retrainer is not None else "")
            self.at_last_scratch = self.stored_count
            if self.retrainer is not None:
                serving = self.registry.load()
                self.retrainer.start(serving.model, serving.version, fresh, older, catalog)
                self.metrics.retraining.set(1)
                scratch = False  # this step fine-tunes as usual
        if collected is not None:
            return self._record(collected, started)
        outcome = finetune_step(self.settings, fresh, older, catalog, self.show_progress, from_scratch=scratch,
                                step_started_at=started_wall, plot=False)
        self.carried = outcome.heldout if outcome.heldout is not None else pd.DataFrame()
        return self._record(outcome, started)

    def _collect_retrain(self, finished: FinishedRetrain, everything: pd.DataFrame, catalog,
                         started_wall: float) -> StepOutcome | None:
        """A finished background retrain (caught up in its worker) is fine-tuned on the labels it
        has not seen and published if it is not worse than the version serving now; None if it
        failed its own gate or has nothing left to be judged on (this step fine-tunes as usual)."""
        log.info("background retrain from %s finished in %.0f s (%d catch-up rounds): %s",
                 finished.job.base_version, finished.seconds, finished.catch_up_rounds, finished.result.reason)
        if not finished.result.passed:
            self.metrics.steps.labels(outcome="rejected").inc()
            return None
        fresh, older = catch_up_labels(finished, everything)
        if not len(fresh):
            return None
        serving = self.registry.load()
        result = finetune(finished.result.model, fresh, older, catalog, self.settings, self.show_progress,
                          base_version=serving.version, gate_against=serving.model)
        result.data_range = {**result.data_range, "mode": "retrain", "retrain_base_version": finished.job.base_version,
                             "stored_labels": len(finished.job.snapshot_label_ids),
                             "retrain_seconds": round(finished.seconds, 1),
                             "catch_up_rounds": finished.catch_up_rounds}
        return publish_result(self.settings, result, serving.version, started_wall, plot=False)

    def _record(self, outcome: StepOutcome, started: float) -> StepOutcome:
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        self.metrics.steps.labels(outcome="published" if outcome.published else "rejected").inc()
        self.outcomes.append(outcome)
        log.info("training step: %s (%s)", outcome.published or "not published", outcome.reason)
        if outcome.published and time.monotonic() - self.last_plot >= self.settings.plot_interval_s:
            plot_versions(self.registry)
            self.last_plot = time.monotonic()
        return outcome

    def run(self, stop: threading.Event | None = None, max_steps: int | None = None) -> None:
        stop = stop or threading.Event()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, addr=self.settings.metrics_host, registry=self.metrics.registry)
        self._connect()
        steps = 0
        try:
            while not stop.is_set():
                self.poll_once()
                if self.due():
                    self.step_started_wall = time.time()
                    self.take_waiting_labels()
                    self.step()
                    steps += 1
                    if max_steps is not None and steps >= max_steps:
                        return
        finally:
            self.close()
