"""The refresher: keeps the retrieval service's index in step with the registry and the catalog.

- ``RegistryRefresher`` polls the model registry; when a new version becomes current it builds
  the index artifact (here, in the refresher process: never in the serving process) and asks
  the retrieval service to load it (``POST /admin/load``).
- ``NewItemWatcher`` (:mod:`index_refresher.new_items`) reads the impressions topic and sends
  items it has not seen before to the service (``POST /admin/items``).
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any, Callable

import orjson
from pydantic import SecretStr

from convcg.http_auth import secret
from index_refresher.builder import build_artifact
from index_refresher.metrics import RefresherMetrics
from registry.index_artifact import ARTIFACT_REASONS, latest_artifact, prune_artifacts, quarantine_artifact
from registry.serving_model import ModelLoader

log = logging.getLogger(__name__)


class AdminError(RuntimeError):
    """An admin call that failed; ``status`` is the HTTP status (None: no answer at all)."""

    def __init__(self, message: str, status: int | None = None, reason: str = ""):
        super().__init__(message)
        self.status, self.reason = status, reason


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
            reason = data.get("reason", "") if isinstance(data, dict) else ""
            raise AdminError(f"{path} -> {resp.status_code}: {message}{hint}", resp.status_code, str(reason or ""))
        return data

    def status(self) -> dict[str, Any]:
        import httpx

        try:
            resp = self.client.get("/admin/status")
        except httpx.HTTPError as exc:
            raise AdminError(f"retrieval service unreachable at {self.client.base_url}: {exc}") from exc
        if resp.status_code >= 400:
            hint = " (set CONVCG_INDEX_ADMIN_TOKEN to the service's admin token)" if resp.status_code == 401 else ""
            raise AdminError(f"/admin/status -> {resp.status_code}{hint}", resp.status_code)
        return resp.json()

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
                 admin: RetrievalAdminClient, progress: bool = True, metrics: RefresherMetrics | None = None):
        self.settings = settings
        self.model_loader = model_loader
        self.current_version = current_version
        self.admin = admin
        self.progress = progress
        self.metrics = metrics or RefresherMetrics()
        self.pushed: str | None = None
        self.failed: str | None = None
        self.rebuilt: set[str] = set()  # versions whose refused artifact was rebuilt once

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
            return self._refused(version, path, exc)
        log.info("retrieval service now serves %s/%s (load took %.2fs)", version, path.name,
                 result.get("seconds", float("nan")))
        self.pushed = version
        self.prune()
        return version

    def _refused(self, version: str, path: Path, exc: AdminError) -> str | None:
        """A load the service refused. A broken artifact is set aside and built again (once per
        version); a refused model version is not tried again; anything else (the service down or
        busy) is retried on the next poll."""
        if exc.status == 409 and exc.reason in ARTIFACT_REASONS and version not in self.rebuilt:
            self.rebuilt.add(version)
            aside = quarantine_artifact(path)
            self.metrics.artifacts_rebuilt.inc()
            log.warning("index artifact %s refused (%s): moved to %s; building it again", path, exc.reason, aside)
            return self.refresh_once()
        if exc.status == 409 and exc.reason:  # the model itself, its warm-up, or a rebuilt artifact again
            self.failed = version
        return None

    def prune(self) -> None:
        """Index retention: the newest ``keep_index_artifacts`` artifacts of each model version
        still in the registry, and whatever the service serves and would roll back to."""
        try:
            status = self.admin.status()
        except AdminError as exc:
            log.warning("index artifacts not pruned (%s)", exc)
            return
        protect = {(p.get("model_version"), p.get("index_version"))
                   for p in (status.get("serving"), status.get("previous")) if p}
        prune_artifacts(self.settings.index_root, self.registry_versions(), self.settings.keep_index_artifacts,
                        protect)

    def registry_versions(self) -> set[str]:
        from registry.store import ModelRegistry

        return set(ModelRegistry(self.settings.registry_root).versions())

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.refresh_once()
            stop.wait(self.settings.poll_interval_s)
