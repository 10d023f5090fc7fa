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
  (``training.background_retrain``) while the steps go on fine-tuning; the step after it
  finishes publishes it if its gate passed and fine-tunes it on the labels stored meanwhile.
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
from training.background_retrain import (
    BackgroundRetrain,
    FinishedRetrain,
    catch_up_labels,
)
from training.config import TrainingSettings
from training.evaluation import full_catalog
from training.label_store import LabelStore
from training.pipeline import (
    StepOutcome,
    finetune_step,
    full_training_step,
    labels_at_last_scratch_training,
    load_catalog,
    publish_result,
    retrain_due,
)

log = logging.getLogger("convcg.training.service")
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
        for label_id, label_ts in self.store.recent_label_ids(settings.dedupe_horizon_s):
            self.seen.add(None, label_id, label_ts)
        self.pending: list[dict] = []
        #: held-out rows of the last step, trained on in the next one (already stored)
        self.carried: pd.DataFrame = pd.DataFrame()
        #: labels stored at the last training from scratch (published or not)
        self.at_last_scratch = labels_at_last_scratch_training(self.registry)
        self.last_step = time.monotonic()
        self.outcomes: list[StepOutcome] = []
        self.retrainer = BackgroundRetrain(settings) if settings.retrain_in_background else None
        self._consumer = None
        self._producer = None
        log.info("trainer: %d labels already stored, registry %s current=%s", len(self.seen),
                 settings.registry_root, self.registry.current_version())

    # --- Kafka ----------------------------------------------------------------------------

    def _connect(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from convcg.kafka_io import json_producer

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

    def _step(self) -> StepOutcome | None:
        new = pd.DataFrame(self.pending, columns=list(LABEL_FIELDS))
        self.store.append(new)
        if self.settings.consumer_group and self._consumer is not None:
            self._commit()
        self.pending = []
        self.last_step = time.monotonic()
        self.metrics.pending.set(0)
        everything = self.store.load()
        catalog = load_catalog(self.settings)
        catalog = full_catalog(catalog, everything) if catalog is not None else None
        started = time.perf_counter()
        if self.registry.current_version() is None:
            if len(everything) < self.settings.min_labels_first_train:
                log.info("%d labels stored, waiting for %d before the first training", len(everything),
                         self.settings.min_labels_first_train)
                self.metrics.steps.labels(outcome="waiting").inc()
                return None
            outcome = full_training_step(self.settings, everything, catalog, self.show_progress)
            self.carried = pd.DataFrame()
            self.at_last_scratch = len(everything)
            return self._record(outcome, started)
        fresh = pd.concat([self.carried, new], ignore_index=True) if len(self.carried) else new
        older = everything[~everything["label_id"].isin(fresh["label_id"])]
        finished = self.retrainer.poll() if self.retrainer is not None else None
        if finished is not None:
            self.metrics.retraining.set(0)
            retrained = self._record(self._publish_retrain(finished), started)
            if retrained.published:
                fresh, older = catch_up_labels(finished, everything)
            if not len(fresh):
                return retrained
            started = time.perf_counter()
        # one retrain at a time: while one runs, a due one waits for a later step
        running = self.retrainer is not None and self.retrainer.running
        scratch = not running and retrain_due(self.settings, len(everything), self.at_last_scratch)
        if scratch:
            log.info("%d labels stored, %.1fx the %d of the last model trained from scratch: retraining%s",
                     len(everything), len(everything) / max(self.at_last_scratch, 1), self.at_last_scratch,
                     " in the background" if self.retrainer is not None else "")
            self.at_last_scratch = len(everything)
            if self.retrainer is not None:
                serving = self.registry.load()
                self.retrainer.start(serving.model, serving.version, fresh, older, catalog)
                self.metrics.retraining.set(1)
                scratch = False  # this step fine-tunes as usual
        outcome = finetune_step(self.settings, fresh, older, catalog, self.show_progress, from_scratch=scratch)
        self.carried = outcome.heldout if outcome.heldout is not None else pd.DataFrame()
        return self._record(outcome, started)

    def _publish_retrain(self, finished: FinishedRetrain) -> StepOutcome:
        """Publish a finished background retrain if its gate passed (``pipeline.publish_result``)."""
        log.info("background retrain from %s finished in %.0f s: %s", finished.job.base_version, finished.seconds,
                 finished.result.reason)
        return publish_result(self.settings, finished.result, finished.job.base_version)

    def _record(self, outcome: StepOutcome, started: float) -> StepOutcome:
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        self.metrics.steps.labels(outcome="published" if outcome.published else "rejected").inc()
        self.outcomes.append(outcome)
        log.info("training step: %s (%s)", outcome.published or "not published", outcome.reason)
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
                    self.take_waiting_labels()
                    self.step()
                    steps += 1
                    if max_steps is not None and steps >= max_steps:
                        return
        finally:
            self.close()
