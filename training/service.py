"""The trainer service: consume the labels topic, fine-tune when enough arrived.

* Labels are deduplicated on ``label_id`` (the topic is at-least-once), against everything
  this trainer has stored before, so a redelivery or a restart changes nothing.
* An undecodable or incomplete label goes to the dead-letter topic with its reason.
* When ``trigger_labels`` new labels have arrived or ``trigger_seconds`` passed since the last
  step (and there is at least one new label), the new labels are stored, then: a full training
  if the registry is empty (once ``min_labels_first_train`` labels exist), else one fine-tune
  step of the current version, published only if the quality gate passes. The held-out slice
  of a step is trained on in the next one. Offsets are committed after the labels are stored.
"""

from __future__ import annotations

import logging
import threading
import time

import orjson
import pandas as pd
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    start_http_server,
)

from convcg.contract import LABEL_FIELDS, Label, Topics
from registry.store import ModelRegistry
from training.config import TrainingSettings
from training.evaluation import full_catalog
from training.examples import REQUIRED_LABEL_COLUMNS
from training.label_store import LabelStore
from training.pipeline import (
    StepOutcome,
    finetune_step,
    full_training_step,
    load_catalog,
)

log = logging.getLogger("convcg.training.service")
POLL_MS = 500
MAX_POLL_RECORDS = 5000


class TrainerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.consumed = Counter("convcg_trainer_labels_consumed", "new labels accepted", registry=r)
        self.duplicates = Counter("convcg_trainer_labels_duplicate", "redelivered labels ignored", registry=r)
        self.invalid = Counter("convcg_trainer_labels_invalid", "labels sent to the dead-letter topic",
                               registry=r)
        self.steps = Counter("convcg_trainer_steps", "training steps by outcome", ["outcome"], registry=r)
        self.step_seconds = Histogram("convcg_trainer_step_seconds", "duration of a training step",
                                      buckets=(1, 5, 15, 30, 60, 120, 300, 900), registry=r)
        self.pending = Gauge("convcg_trainer_pending_labels", "labels waiting for the next step", registry=r)


def parse_label(raw: bytes) -> dict:
    """Decode one label message; raises ValueError with the reason if it is unusable."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError("label is not a JSON object")
    missing = [c for c in ("label_id", *REQUIRED_LABEL_COLUMNS) if c not in data]
    if missing:
        raise ValueError(f"label lacks fields {missing}")
    try:
        label = Label.from_dict(data)
        label.impression_ts, label.label_ts = float(label.impression_ts), float(label.label_ts)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad label field: {exc}") from exc
    return label.to_dict()


class TrainerService:
    def __init__(self, settings: TrainingSettings, show_progress: bool = False):
        self.settings = settings
        self.topics = Topics(prefix=settings.topic_prefix)
        self.store = LabelStore(settings.label_store)
        self.registry = ModelRegistry(settings.registry_root)
        self.metrics = TrainerMetrics()
        self.show_progress = show_progress
        self.seen: set[str] = self.store.label_ids()
        self.pending: list[dict] = []
        #: held-out rows of the last step, trained on in the next one (already stored)
        self.carried: pd.DataFrame = pd.DataFrame()
        self.last_step = time.monotonic()
        self.outcomes: list[StepOutcome] = []
        self._consumer = None
        self._producer = None
        log.info("trainer: %d labels already stored, registry %s current=%s", len(self.seen),
                 settings.registry_root, self.registry.current_version())

    # --- Kafka ----------------------------------------------------------------------------

    def _connect(self) -> None:
        from kafka import KafkaConsumer, TopicPartition

        from convcg.kafka_io import json_producer

        s = self.settings
        common = dict(bootstrap_servers=s.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=8 * 1024 * 1024)
        if s.consumer_group:
            self._consumer = KafkaConsumer(self.topics.labels, group_id=s.consumer_group, **common)
        else:  # no group: read every partition from the start; dedup makes replays harmless
            self._consumer = KafkaConsumer(**common)
            parts = self._consumer.partitions_for_topic(self.topics.labels) or set()
            tps = [TopicPartition(self.topics.labels, p) for p in sorted(parts)]
            self._consumer.assign(tps)
            self._consumer.seek_to_beginning(*tps)
        self._producer = json_producer(s.bootstrap)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush()
            self._producer.close()

    def _dead_letter(self, raw: bytes, reason: str) -> None:
        self.metrics.invalid.inc()
        log.warning("label sent to dead letters: %s", reason)
        payload = {"source": "trainer", "topic": self.topics.labels, "reason": reason,
                   "value": raw.decode("utf-8", errors="replace")}
        self._producer.send(self.topics.dead_letters, orjson.dumps(payload))

    def accept(self, raw: bytes) -> bool:
        """Take one raw label message; True if it was new."""
        try:
            label = parse_label(raw)
        except ValueError as exc:
            self._dead_letter(raw, str(exc))
            return False
        if label["label_id"] in self.seen:
            self.metrics.duplicates.inc()
            return False
        self.seen.add(label["label_id"])
        self.pending.append(label)
        self.metrics.consumed.inc()
        return True

    def poll_once(self) -> int:
        if self._consumer is None:
            self._connect()
        batch = self._consumer.poll(timeout_ms=POLL_MS, max_records=MAX_POLL_RECORDS)
        new = sum(self.accept(rec.value) for records in batch.values() for rec in records)
        self.metrics.pending.set(len(self.pending))
        return new

    # --- training -------------------------------------------------------------------------

    def due(self) -> bool:
        if not self.pending:
            return False
        s = self.settings
        return len(self.pending) >= s.trigger_labels or time.monotonic() - self.last_step >= s.trigger_seconds

    def step(self) -> StepOutcome | None:
        """Store the pending labels, then train (full if no model yet) or fine-tune."""
        new = pd.DataFrame(self.pending, columns=list(LABEL_FIELDS))
        self.store.append(new)
        if self.settings.consumer_group and self._consumer is not None:
            self._consumer.commit()
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
        else:
            fresh = pd.concat([self.carried, new], ignore_index=True) if len(self.carried) else new
            older = everything[~everything["label_id"].isin(fresh["label_id"])]
            outcome = finetune_step(self.settings, fresh, older, catalog, self.show_progress)
            self.carried = outcome.heldout if outcome.heldout is not None else pd.DataFrame()
        self.metrics.step_seconds.observe(time.perf_counter() - started)
        self.metrics.steps.labels(outcome="published" if outcome.published else "rejected").inc()
        self.outcomes.append(outcome)
        log.info("training step: %s (%s)", outcome.published or "not published", outcome.reason)
        return outcome

    def run(self, stop: threading.Event | None = None, max_steps: int | None = None) -> None:
        stop = stop or threading.Event()
        if self.settings.metrics_port:
            start_http_server(self.settings.metrics_port, registry=self.metrics.registry)
        self._connect()
        steps = 0
        try:
            while not stop.is_set():
                self.poll_once()
                if self.due():
                    self.step()
                    steps += 1
                    if max_steps is not None and steps >= max_steps:
                        return
        finally:
            self.close()
