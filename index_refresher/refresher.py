"""The refresher: keeps the retrieval service's index in step with the registry and the catalog.

- ``RegistryRefresher`` polls the model registry; when a new version becomes current it builds
  the index artifact (here, in the refresher process: never in the serving process) and asks
  the retrieval service to load it (``POST /admin/load``).
- ``NewItemWatcher`` reads the impressions topic (no consumer group) and sends items it has not
  seen before to the service (``POST /admin/items``), which embeds them with its serving model
  version and makes them retrievable; they are also kept in ``new_items_path`` so the next full
  build includes them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson
from pydantic import SecretStr

from convcg.contract import Impression
from convcg.http_auth import secret
from convcg.validation import DEFAULT_MAX_FUTURE_S, InvalidEvent, parse_event
from index_refresher.builder import build_artifact, read_catalog
from registry.index_artifact import latest_artifact
from registry.item_tower import ModelLoader

log = logging.getLogger("convcg.index.refresher")

POLL_MS = 200


class AdminError(RuntimeError):
    pass


class RetrievalAdminClient:
    """HTTP client of the retrieval service's admin endpoints."""

    def __init__(self, base_url: str, timeout_s: float = 600.0, admin_token: SecretStr | str = ""):
        import httpx

        token = secret(admin_token)
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers)

    @classmethod
    def from_settings(cls, settings, timeout_s: float | None = None) -> "RetrievalAdminClient":
        """A client of ``settings.retrieval_url`` sending ``settings.admin_token``."""
        return cls(settings.retrieval_url, settings.admin_timeout_s if timeout_s is None else timeout_s,
                   admin_token=settings.admin_token)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            resp = self.client.post(path, content=orjson.dumps(body or {}),
                                    headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise AdminError(f"retrieval service unreachable at {self.client.base_url}: {exc}") from exc
        try:
            data = resp.json() if resp.content else {}
        except ValueError:
            data = {"error": resp.text[:500]}
        if resp.status_code >= 400:
            hint = " (set CONVCG_INDEX_ADMIN_TOKEN to the service's admin token)" if resp.status_code == 401 else ""
            message = data.get("error", data) if isinstance(data, dict) else data
            raise AdminError(f"{path} -> {resp.status_code}: {message}{hint}")
        return data

    def status(self) -> dict[str, Any]:
        import httpx

        try:
            return self.client.get("/admin/status").json()
        except httpx.HTTPError as exc:
            raise AdminError(f"retrieval service unreachable at {self.client.base_url}: {exc}") from exc

    def load(self, model_version: str | None = None, index_version: str | None = None) -> dict[str, Any]:
        return self._post("/admin/load", {"model_version": model_version, "index_version": index_version,
                                          "wait": True})

    def rollback(self) -> dict[str, Any]:
        return self._post("/admin/rollback")

    def add_items(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        return self._post("/admin/items", {"items": rows})

    def close(self) -> None:
        self.client.close()


class RegistryRefresher:
    """One poll step at a time (``refresh_once``); ``run`` loops until stopped."""

    def __init__(self, settings, model_loader: ModelLoader, current_version: Callable[[], str | None],
                 admin: RetrievalAdminClient, progress: bool = True):
        self.settings = settings
        self.model_loader = model_loader
        self.current_version = current_version
        self.admin = admin
        self.progress = progress
        self.pushed: str | None = None
        self.failed: str | None = None

    def artifact_for(self, version: str) -> Path:
        """The newest artifact of ``version``, building one if there is none."""
        path = latest_artifact(self.settings.index_root, version)
        if path is not None:
            return path
        log.info("model version %s has no index yet: building it", version)
        return build_artifact(self.model_loader(version), self.settings, progress=self.progress)

    def refresh_once(self) -> str | None:
        """Build and push the registry's current version if the service does not serve it.
        Returns the version pushed, if any."""
        version = self.current_version()
        if version is None or version == self.pushed or version == self.failed:
            return None
        try:
            serving = (self.admin.status().get("serving") or {}).get("model_version")
        except AdminError as exc:
            log.warning("%s; will retry", exc)
            return None
        if serving == version:
            self.pushed = version
            return None
        try:
            path = self.artifact_for(version)
        except Exception as exc:  # bad model version, empty catalog, recall below the gate...
            log.error("could not build an index for model version %s: %s", version, exc)
            self.failed = version
            return None
        try:
            result = self.admin.load(version, path.name)
        except AdminError as exc:
            log.error("retrieval service did not take %s/%s: %s", version, path.name, exc)
            return None
        log.info("retrieval service now serves %s/%s (load took %.2fs)", version, path.name,
                 result.get("seconds", float("nan")))
        self.pushed = version
        return version

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.refresh_once()
            stop.wait(self.settings.poll_interval_s)


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

    def __init__(self, bootstrap: str, topic: str, admin: RetrievalAdminClient, known: set[str],
                 new_items_path: Path, flush_s: float = 1.0, batch: int = 512, from_beginning: bool = False,
                 max_future_s: float = DEFAULT_MAX_FUTURE_S):
        self.bootstrap = bootstrap
        self.topic = topic
        self.admin = admin
        self.known = known
        self.new_items_path = Path(new_items_path)
        self.flush_s = flush_s
        self.batch = batch
        self.from_beginning = from_beginning
        self.max_future_s = max_future_s
        self.pending: dict[str, dict[str, Any]] = {}
        self.added = 0
        self.rejected: Counter = Counter()  # invalid impressions by reason
        self.ready = threading.Event()  # set once positioned on the topic

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

    def flush(self) -> int:
        if not self.pending:
            return 0
        rows = list(self.pending.values())
        try:
            result = self.admin.add_items(rows)
        except Exception as exc:
            log.warning("could not add %d new items yet (%s); will retry", len(rows), exc)
            return 0
        append_new_items(self.new_items_path, rows)
        self.known.update(r["item_id"] for r in rows)
        self.pending.clear()
        self.added += result.get("added", 0)
        log.info("sent %d new items to the retrieval service (%d added, serving %s items)", len(rows),
                 result.get("added", 0), result.get("items"))
        return len(rows)

    def run(self, stop: threading.Event) -> None:
        from confluent_kafka import (
            OFFSET_BEGINNING,
            OFFSET_END,
            Consumer,
            TopicPartition,
        )

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
                for row in new_item_rows(self._decode_values(values), self.known):
                    self.pending.setdefault(row["item_id"], row)
                now = time.monotonic()
                if self.pending and (len(self.pending) >= self.batch or now - last_flush >= self.flush_s):
                    self.flush()
                    last_flush = now
                elif not self.pending:
                    last_flush = now
        finally:
            consumer.close()
