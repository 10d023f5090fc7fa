"""Versioned model registry on disk.

Layout under ``root`` (default ``var/registry/``)::

    versions/v000001/weights.safetensors   tensors of the model's state dict
                    /config.json           ModelConfig (rebuilds the modules exactly)
                    /metrics.json          evaluation at publish time
                    /data_range.json       what the version was trained on
                    /manifest.json         format version, sha256 of the weights, created_at
    CURRENT                                id of the serving version (replaced atomically)

A version folder is written under a temporary name, verified by loading it back, then
renamed into place; only then does ``CURRENT`` move (write to a temp file + ``os.replace``).
A corrupted or incompatible version is refused by ``load`` with ``RegistryError`` and never
becomes current through ``publish``; whatever was serving stays. A version is read only from
inside ``versions/``: its name must be a plain version name and neither its folder nor its
files may lead outside through a symbolic link (``registry.containment``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from registry.containment import OutsideRoot, contained, inside
from registry.index_artifact import fsync_dir, fsync_tree
from model.config import MODEL_FORMAT_VERSION, ModelConfig

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
METRICS = "metrics.json"
DATA_RANGE = "data_range.json"
MANIFEST = "manifest.json"
CURRENT = "CURRENT"
VERSIONS = "versions"
LOCK = ".lock"
VERSION_PREFIX = "v"
VERSION_DIGITS = 6


class RetentionSettings(BaseSettings):
    """How many model versions the registry keeps (env ``CONVCG_REGISTRY_KEEP_VERSIONS``)."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_REGISTRY_", extra="ignore")

    #: the newest versions kept on publish; the current one and the one before it (the rollback
    #: target) are kept too, whatever their age
    keep_versions: int = Field(10, ge=1)


class RegistryError(RuntimeError):
    """A version is missing, corrupted or incompatible, or the registry is empty."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))


class LoadedModel:
    """A model version ready to embed items and queries (eval mode, no gradients)."""

    def __init__(self, version: str, model, config: ModelConfig, metrics: dict, data_range: dict):
        self.version = version
        self.model = model
        self.config = config
        self.metrics = metrics
        self.data_range = data_range

    @property
    def dim(self) -> int:
        """Width of the item and query vectors (``ModelConfig.retrieval_dim``)."""
        return self.config.retrieval_dim

    def embed_items(self, catalog: pd.DataFrame, item_features: pd.DataFrame | None = None,
                    batch_size: int = 4096) -> np.ndarray:
        """float32 ``[len(catalog), dim]`` in catalog order: the L2-normalised embedding (and the
        conversion bias column, see ``model.towers``); ranked by inner product with
        ``embed_queries``."""
        from model.inference import embed_items

        return embed_items(self.model, catalog, item_features, batch_size)

    def embed_queries(self, queries: list[dict]) -> np.ndarray:
        """float32 ``[len(queries), dim]``. Each dict: ``user_id``, ``surface``, optional
        ``recent_items`` (item ids, newest first) and user feature values by name."""
        from model.inference import embed_queries

        return embed_queries(self.model, queries)

    def __repr__(self) -> str:
        return f"LoadedModel(version={self.version!r}, dim={self.dim})"


class ModelRegistry:
    def __init__(self, root: Path | str, keep_versions: int | None = None):
        self.root = Path(root)
        self.keep_versions = keep_versions or RetentionSettings().keep_versions

    # --- reading --------------------------------------------------------------------------

    @property
    def versions_dir(self) -> Path:
        return self.root / VERSIONS

    def versions(self) -> list[str]:
        """Complete versions, oldest first (temporary folders are not versions)."""
        if not self.versions_dir.is_dir():
            return []
        return sorted(p.name for p in self.versions_dir.iterdir()
                      if p.is_dir() and p.name.startswith(VERSION_PREFIX) and (p / MANIFEST).exists())

    def version_dir(self, version: str) -> Path:
        """The folder of ``version``, never outside ``versions/`` (RegistryError otherwise)."""
        try:
            return contained(self.versions_dir, version, what="model version")
        except OutsideRoot as exc:
            raise RegistryError(f"registry {self.root}: {exc}") from None

    def current_version(self) -> str | None:
        path = self.root / CURRENT
        if not path.exists():
            return None
        version = path.read_text().strip()
        return version or None

    def metrics(self, version: str) -> dict:
        path = self.version_dir(version) / METRICS
        return json.loads(path.read_text()) if path.exists() else {}

    def data_range(self, version: str) -> dict:
        path = self.version_dir(version) / DATA_RANGE
        return json.loads(path.read_text()) if path.exists() else {}

    def load(self, version: str | None = None) -> LoadedModel:
        """Load a version (None = current). Raises ``RegistryError`` if it is missing,
        corrupted (checksum, unreadable tensors) or incompatible (format, shapes).

        If the current version cannot be loaded, the newest loadable version before it is (the
        one a rollback would pick), with an error logged: a broken CURRENT does not stop serving."""
        if version is not None:
            return self._load_dir(self.version_dir(version), version)
        current = self.current_version()
        if current is None:
            raise RegistryError(f"registry {self.root} has no current version")
        try:
            return self._load_dir(self.version_dir(current), current)
        except RegistryError as exc:
            versions = self.versions()
            earlier = versions[:versions.index(current)] if current in versions else versions
            for candidate in reversed(earlier):
                try:
                    model = self._load_dir(self.version_dir(candidate), candidate)
                except RegistryError:
                    continue
                log.error("registry %s: current version %s cannot be loaded (%s); falling back to %s",
                          self.root, current, exc, candidate)
                return model
            raise

    def _load_dir(self, folder: Path, version: str) -> LoadedModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from model.towers import TwoTowerModel

        if not folder.is_dir():
            raise RegistryError(f"version {version!r} does not exist in {self.root}")
        for name in (MANIFEST, CONFIG, WEIGHTS, METRICS, DATA_RANGE):
            if (folder / name).exists() and not inside(folder, folder / name):
                raise RegistryError(f"version {version!r}: {name} links outside its folder "
                                    f"(to {(folder / name).resolve()}): refused")
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
            config_data = json.loads((folder / CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise RegistryError(f"version {version!r}: unreadable manifest/config: {exc}") from exc
        fmt = manifest.get("format_version")
        if fmt != MODEL_FORMAT_VERSION:
            raise RegistryError(f"version {version!r} has format {fmt}, this code reads {MODEL_FORMAT_VERSION}: "
                                "incompatible checkpoint")
        weights = folder / WEIGHTS
        if not weights.exists():
            raise RegistryError(f"version {version!r}: {WEIGHTS} is missing")
        digest = _sha256(weights)
        if digest != manifest.get("weights_sha256"):
            raise RegistryError(f"version {version!r}: weights checksum mismatch (corrupted file: "
                                f"{digest[:12]} != {str(manifest.get('weights_sha256'))[:12]})")
        try:
            config = ModelConfig.model_validate(config_data)
        except Exception as exc:
            raise RegistryError(f"version {version!r}: config does not validate: {exc}") from exc
        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError, RuntimeError, ValueError) as exc:
            raise RegistryError(f"version {version!r}: weights unreadable: {exc}") from exc
        model = TwoTowerModel(config)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise RegistryError(f"version {version!r}: weights do not fit its config "
                                f"(incompatible checkpoint): {str(exc)[:500]}") from exc
        model.eval()
        metrics = json.loads((folder / METRICS).read_text()) if (folder / METRICS).exists() else {}
        data_range = json.loads((folder / DATA_RANGE).read_text()) if (folder / DATA_RANGE).exists() else {}
        return LoadedModel(version, model, config, metrics, data_range)

    # --- writing --------------------------------------------------------------------------

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _next_version(self) -> str:
        existing = [int(v[len(VERSION_PREFIX):]) for v in self.versions() if v[len(VERSION_PREFIX):].isdigit()]
        # also skip numbers of leftover folders without a manifest
        if self.versions_dir.is_dir():
            for p in self.versions_dir.iterdir():
                tail = p.name[len(VERSION_PREFIX):]
                if p.name.startswith(VERSION_PREFIX) and tail.isdigit():
                    existing.append(int(tail))
        return f"{VERSION_PREFIX}{(max(existing, default=0) + 1):0{VERSION_DIGITS}d}"

    def _set_current(self, version: str) -> None:
        tmp = self.root / f"{CURRENT}.tmp.{os.getpid()}"
        tmp.write_text(version + "\n")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.root / CURRENT)
        fsync_dir(self.root)

    def publish(self, model, config: ModelConfig | dict, metrics: dict, data_range: dict,
                make_current: bool = True) -> str:
        """Write a new version, verify it loads, then make it current. Returns its id."""
        from safetensors.torch import save_file

        config = ModelConfig.model_validate(config) if isinstance(config, dict) else config
        with self._locked():
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            version = self._next_version()
            tmp = self.versions_dir / f".tmp-{version}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            try:
                state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
                save_file(state, str(tmp / WEIGHTS))
                _write_json(tmp / CONFIG, config.model_dump(mode="json"))
                _write_json(tmp / METRICS, metrics)
                _write_json(tmp / DATA_RANGE, data_range)
                _write_json(tmp / MANIFEST, {"format_version": MODEL_FORMAT_VERSION, "version": version,
                                             "weights_sha256": _sha256(tmp / WEIGHTS),
                                             "created_at": time.time()})
                self._load_dir(tmp, version)  # refuse to publish what cannot be read back
                fsync_tree(tmp)  # the files are on disk before the rename publishes them
                os.rename(tmp, self.versions_dir / version)
                fsync_dir(self.versions_dir)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
            if make_current:
                self._set_current(version)
            self._prune()
        log.info("published model %s (current=%s) metrics=%s", version, make_current,
                 {k: v for k, v in metrics.items() if isinstance(v, (int, float))})
        return version

    def set_current(self, version: str) -> None:
        """Make an existing, loadable version current (refuses a broken one)."""
        with self._locked():
            self._load_dir(self.version_dir(version), version)
            self._set_current(version)
        log.info("registry %s: current version is now %s", self.root, version)

    def rollback(self) -> str:
        """Make the version before the current one current; returns it."""
        with self._locked():
            versions = self.versions()
            current = self.current_version()
            if current is None or current not in versions:
                raise RegistryError(f"registry {self.root}: no current version to roll back from")
            idx = versions.index(current)
            for candidate in reversed(versions[:idx]):
                try:
                    self._load_dir(self.version_dir(candidate), candidate)
                except RegistryError as exc:
                    log.warning("rollback skips %s: %s", candidate, exc)
                    continue
                self._set_current(candidate)
                log.info("rolled back %s -> %s", current, candidate)
                return candidate
            raise RegistryError(f"registry {self.root}: no loadable version before {current}")

    def kept_versions(self) -> set[str]:
        """What retention keeps: the newest ``keep_versions``, the current version and the one a
        rollback would go to (the newest before current)."""
        versions = self.versions()
        kept = set(versions[-self.keep_versions:])
        current = self.current_version()
        if current in versions:
            kept.add(current)
            before = versions[:versions.index(current)]
            if before:
                kept.add(before[-1])
        return kept

    def _prune(self) -> list[str]:
        """Remove the versions retention does not keep (under the lock)."""
        kept = self.kept_versions()
        removed = [v for v in self.versions() if v not in kept]
        for version in removed:
            folder = self.versions_dir / version
            aside = self.versions_dir / f".pruned-{version}-{os.getpid()}"
            os.rename(folder, aside)  # gone from versions() at once; the files follow
            shutil.rmtree(aside, ignore_errors=True)
        if removed:
            fsync_dir(self.versions_dir)
            log.info("registry %s: pruned %d old versions (%s..%s); kept %s", self.root, len(removed), removed[0],
                     removed[-1], sorted(kept))
        return removed
