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
from pathlib import Path
from typing import Any, Callable, Iterable

import orjson

from index_refresher.builder import build_artifact, read_catalog
from registry.index_artifact import latest_artifact
from registry.item_tower import ModelLoader

log = logging.getLogger("convcg.index.refresher")

POLL_MS = 200


class AdminError(RuntimeError):
    pass


class RetrievalAdminClient:
    """HTTP client of the retrieval service's admin endpoints."""

    def __init__(self, base_url: str, timeout_s: float = 600.0):
        import httpx

        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def _post(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            resp = self.client.post(path, content=orjson.dumps(body or {}),
                                    headers={"content-type": "application/json"})
        except httpx.HTTPError as exc:
            raise AdminError(f"retrieval service unreachable at {self.client.base_url}: {exc}") from exc
        data = resp.json() if resp.content else {}
        if resp.status_code >= 400:
            raise AdminError(f"{path} -> {resp.status_code}: {data.get('error', data)}")
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


def new_item_rows(impressions: Iterable[dict[str, Any]], known: set[str]) -> list[dict[str, Any]]:
    """Rows of items not in ``known``, first appearance wins; malformed impressions are skipped."""
    rows: dict[str, dict[str, Any]] = {}
    for imp in impressions:
        item_id, advertiser_id = imp.get("item_id"), imp.get("advertiser_id")
        if not isinstance(item_id, str) or not item_id or not isinstance(advertiser_id, str) or not advertiser_id:
            continue
        if item_id not in known and item_id not in rows:
            rows[item_id] = {"item_id": item_id, "advertiser_id": advertiser_id}
    return list(rows.values())


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
                 new_items_path: Path, flush_s: float = 1.0, batch: int = 512, from_beginning: bool = False):
        self.bootstrap = bootstrap
        self.topic = topic
        self.admin = admin
        self.known = known
        self.new_items_path = Path(new_items_path)
        self.flush_s = flush_s
        self.batch = batch
        self.from_beginning = from_beginning
        self.pending: dict[str, dict[str, Any]] = {}
        self.added = 0
        self.malformed = 0
        self.ready = threading.Event()  # set once positioned on the topic

    def _decode(self, records) -> list[dict[str, Any]]:
        out = []
        for rec in records:
            try:
                value = orjson.loads(rec.value)
                if not isinstance(value, dict):
                    raise ValueError("not an object")
                out.append(value)
            except ValueError:
                self.malformed += 1
                log.warning("skipping malformed impression at %s[%d]@%d", rec.topic, rec.partition, rec.offset)
        return out

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
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        try:
            parts = None
            while not stop.is_set() and not parts:
                parts = consumer.partitions_for_topic(self.topic)
                if not parts:
                    stop.wait(1.0)
            if stop.is_set():
                return
            tps = [TopicPartition(self.topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            (consumer.seek_to_beginning if self.from_beginning else consumer.seek_to_end)(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve the seek now, so "ready" means positioned
            self.ready.set()
            log.info("watching %s for new items (%d partitions)", self.topic, len(tps))
            last_flush = time.monotonic()
            while not stop.is_set():
                batch = consumer.poll(timeout_ms=POLL_MS, max_records=5000)
                for records in batch.values():
                    for row in new_item_rows(self._decode(records), self.known):
                        self.pending.setdefault(row["item_id"], row)
                now = time.monotonic()
                if self.pending and (len(self.pending) >= self.batch or now - last_flush >= self.flush_s):
                    self.flush()
                    last_flush = now
                elif not self.pending:
                    last_flush = now
        finally:
            consumer.close()
