"""The new-item watcher: reads the impressions topic (no consumer group) and sends items it has
not seen before to the retrieval service (``POST /admin/items``), which embeds them with its
serving model version; they are also kept in ``new_items_path`` so the next full build includes
them.

Bounded by design:
- ``pending`` holds at most ``max_pending`` items; past that the oldest are dropped (counted and
  logged; an item dropped is still unknown, so it is picked up again when it is seen again);
- a flush sends batches of at most ``batch`` items (never more than the service takes in one
  request);
- a batch the service refuses for good (a 4xx other than 401/403/408/429) is dead-lettered with
  its status and reason (``new_items_refused.jsonl`` beside ``new_items_path``, a metric, a log
  line) and the watcher moves on; only transient failures (service unreachable, 5xx, no index
  loaded yet) are retried, with exponential backoff;
- the watcher thread never dies silently: ``run_supervised`` logs the error, counts it and
  starts the watcher again after a backoff.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import orjson

from convcg.contract import Impression
from convcg.rate_limited_log import RateLimitedLog
from convcg.validation import DEFAULT_MAX_FUTURE_S, InvalidEvent, parse_event
from index_refresher.builder import read_catalog
from index_refresher.metrics import RefresherMetrics

log = logging.getLogger(__name__)

POLL_MS = 200
#: the most items one ``/admin/items`` request may carry (``retrieval.validation.MAX_ADD_ITEMS``)
SERVICE_MAX_ITEMS = 10_000
DEFAULT_MAX_PENDING = 100_000
#: refusals worth retrying: the caller's credentials or the service's load may change
TRANSIENT_4XX = frozenset({401, 403, 408, 429})
MAX_BACKOFF_S = 30.0


def is_permanent(status: int | None) -> bool:
    """Whether a refused batch would be refused again as it is (a 4xx about its content)."""
    return status is not None and 400 <= status < 500 and status not in TRANSIENT_4XX


def new_item_rows(impressions: Iterable[Impression], known: set[str]) -> list[dict[str, Any]]:
    """Rows of items not in ``known``, first appearance wins."""
    rows: dict[str, dict[str, Any]] = {}
    for imp in impressions:
        if imp.item_id not in known and imp.item_id not in rows:
            rows[imp.item_id] = {"item_id": imp.item_id, "advertiser_id": imp.advertiser_id}
    return list(rows.values())


def decode_impressions(values: Iterable[bytes | None], now: float, max_future_s: float,
                       rejected: Counter) -> list[Impression]:
    """Impressions parsed by the contract's edge validation; producer watermarks are skipped and
    every rejected record is counted in ``rejected`` by its reason."""
    out = []
    for raw in values:
        try:
            event = parse_event("impression", raw, now, max_future_s)
        except InvalidEvent as exc:
            rejected[exc.reason] += 1
            continue
        if isinstance(event, Impression):
            out.append(event)
    return out


def append_new_items(path: Path, rows: list[dict[str, Any]]) -> None:
    """Append rows to the new-items parquet (rewritten atomically)."""
    import pandas as pd

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame(rows)
    if path.is_file():
        frame = pd.concat([pd.read_parquet(path), frame], ignore_index=True).drop_duplicates("item_id")
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def known_item_ids(settings) -> set[str]:
    try:
        return set(read_catalog(settings.catalog_path, settings.new_items_path)["item_id"])
    except Exception as exc:
        log.warning("no catalog to seed the known items (%s): every item seen is treated as new", exc)
        return set()


class NewItemWatcher:
    """Reads impressions (no consumer group) and pushes unseen items to the retrieval service."""

    def __init__(self, bootstrap: str, topic: str, admin, known: set[str],
                 new_items_path: Path, flush_s: float = 1.0, batch: int = 512, from_beginning: bool = False,
                 max_future_s: float = DEFAULT_MAX_FUTURE_S, max_pending: int = DEFAULT_MAX_PENDING,
                 metrics: RefresherMetrics | None = None):
        self.bootstrap = bootstrap
        self.topic = topic
        self.admin = admin
        self.known = known
        self.new_items_path = Path(new_items_path)
        self.refused_path = self.new_items_path.with_name("new_items_refused.jsonl")
        self.flush_s = flush_s
        self.batch = max(1, min(int(batch), SERVICE_MAX_ITEMS))
        self.from_beginning = from_beginning
        self.max_future_s = max_future_s
        self.max_pending = max(1, int(max_pending))
        self.metrics = metrics or RefresherMetrics()
        self.pending: dict[str, dict[str, Any]] = {}
        self.added = 0
        self.dropped = 0
        self.refused = 0
        self.restarts = 0
        self.backoff_s = 0.0  # the wait before the next flush after transient failures
        self.rejected: Counter = Counter()  # invalid impressions by reason
        self.ready = threading.Event()  # set once positioned on the topic
        self._drops_log = RateLimitedLog(log, "new-item buffer full: oldest pending items dropped")
        self._retry_log = RateLimitedLog(log, "new items not sent yet (transient); retrying with backoff")

    # --- pending ---------------------------------------------------------------------------

    def offer(self, rows: Iterable[dict[str, Any]]) -> None:
        """Queue rows (first appearance wins); past ``max_pending`` the oldest are dropped."""
        for row in rows:
            self.pending.setdefault(row["item_id"], row)
        over = len(self.pending) - self.max_pending
        if over > 0:
            for item_id in list(self.pending)[:over]:
                del self.pending[item_id]
            self.dropped += over
            self.metrics.items_dropped.inc(over)
            self._drops_log.error(detail=f"{over} dropped now, {self.dropped} in all, at most "
                                         f"{self.max_pending} pending")
        self.metrics.items_pending.set(len(self.pending))

    # --- flushing --------------------------------------------------------------------------

    def _dead_letter(self, rows: list[dict[str, Any]], status: int | None, reason: str) -> None:
        self.refused += len(rows)
        self.metrics.items_refused.labels(str(status)).inc(len(rows))
        log.error("retrieval service refused %d new items for good (%s): %s; dead-lettered to %s",
                  len(rows), status, reason, self.refused_path)
        self.refused_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.refused_path, "ab") as f:
            record = {"at": time.time(), "status": status, "reason": reason[:500], "items": rows}
            f.write(orjson.dumps(record) + b"\n")

    def flush(self) -> int:
        """Send the pending items in batches; returns how many the service took. Stops at the
        first transient failure (the rest waits for the next flush, after a backoff)."""
        from index_refresher.refresher import AdminError

        sent = 0
        while self.pending:
            rows = list(self.pending.values())[:self.batch]
            try:
                result = self.admin.add_items(rows)
            except AdminError as exc:
                if not is_permanent(exc.status):
                    self.metrics.flush_failures.inc()
                    self.backoff_s = min(MAX_BACKOFF_S, max(self.flush_s, 2 * self.backoff_s))
                    self._retry_log.error(exc, detail=f"{len(self.pending)} pending, next try in "
                                                      f"{self.backoff_s:.1f}s")
                    break
                self._dead_letter(rows, exc.status, str(exc))
                self.known.update(r["item_id"] for r in rows)  # refused as they are: not again
            else:
                append_new_items(self.new_items_path, rows)
                self.known.update(r["item_id"] for r in rows)
                sent += len(rows)
                self.added += result.get("added", 0)
                self.metrics.items_sent.inc(len(rows))
                self.backoff_s = 0.0
                log.info("sent %d new items to the retrieval service (%d added, serving %s items)", len(rows),
                         result.get("added", 0), result.get("items"))
            for r in rows:
                self.pending.pop(r["item_id"], None)
        self.metrics.items_pending.set(len(self.pending))
        return sent

    # --- the topic -------------------------------------------------------------------------

    def _resolve_start(self, consumer, tps) -> None:
        """Turn the logical start (beginning / end) into offsets now, so "ready" means positioned:
        an impression produced after ``ready`` is seen."""
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        resolved = []
        for tp in tps:
            low, high = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), timeout=10,
                                                       cached=False)
            resolved.append(TopicPartition(tp.topic, tp.partition, low if tp.offset == OFFSET_BEGINNING else high))
        consumer.assign(resolved)

    def _decode_values(self, values) -> list[Impression]:
        before = self.malformed
        impressions = decode_impressions(values, time.time(), self.max_future_s, self.rejected)
        if self.malformed > before:
            log.warning("skipped %d invalid impressions (by reason so far: %s)", self.malformed - before,
                        dict(self.rejected))
        return impressions

    @property
    def malformed(self) -> int:
        return sum(self.rejected.values())

    def run(self, stop: threading.Event) -> None:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition

        consumer = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "convcg-new-items",
                             "enable.auto.commit": False})
        try:
            parts: list[int] = []
            while not stop.is_set() and not parts:
                metadata = consumer.list_topics(self.topic, timeout=10).topics.get(self.topic)
                parts = sorted(metadata.partitions) if metadata is not None and metadata.error is None else []
                if not parts:
                    stop.wait(1.0)
            if stop.is_set():
                return
            start = OFFSET_BEGINNING if self.from_beginning else OFFSET_END
            tps = [TopicPartition(self.topic, p, start) for p in parts]
            consumer.assign(tps)
            self._resolve_start(consumer, tps)
            self.ready.set()
            log.info("watching %s for new items (%d partitions)", self.topic, len(tps))
            last_flush = time.monotonic()
            while not stop.is_set():
                messages = consumer.consume(5000, timeout=POLL_MS / 1000)
                values = [m.value() for m in messages if m.error() is None]
                self.offer(new_item_rows(self._decode_values(values), self.known))
                now = time.monotonic()
                wait = max(self.flush_s, self.backoff_s)
                if self.pending and ((len(self.pending) >= self.batch and not self.backoff_s)
                                     or now - last_flush >= wait):
                    self.flush()
                    last_flush = now
                elif not self.pending:
                    last_flush = now
        finally:
            consumer.close()

    def run_supervised(self, stop: threading.Event, restart_backoff_s: float = 1.0) -> None:
        """``run`` until ``stop``; a failure is logged with its traceback, counted
        (``convcg_refresher_watcher_restarts``) and the watcher started again after a backoff
        (doubling, up to MAX_BACKOFF_S; reset once it runs again)."""
        backoff = restart_backoff_s
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.run(stop)
                return
            except Exception:  # noqa: BLE001 - logged and counted, then restarted
                self.restarts += 1
                self.metrics.watcher_restarts.inc()
                self.ready.clear()
                if time.monotonic() - started > MAX_BACKOFF_S:
                    backoff = restart_backoff_s
                log.exception("new-item watcher failed (restart %d in %.1fs)", self.restarts, backoff)
                stop.wait(backoff)
                backoff = min(MAX_BACKOFF_S, 2 * backoff)
