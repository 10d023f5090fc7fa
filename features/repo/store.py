"""Opening Feast's ``FeatureStore`` from settings and applying the repo.

The store is configured in code (``RepoConfig``), never from a yaml file; applying the repo
writes that configuration out as ``<repo_dir>/feature_store.yaml``, so any Feast client (the
retrieval service's in-process reader, a notebook) opens the same store with
``FeatureStore(repo_path=...)``. The registry is a
local file with ``cache_ttl_seconds`` set, so the SDK does not re-read it on every call (Feast's
registry lookup can cost as much as the online read); the online service goes further and
keeps the resolved feature views in memory (``features.online.read``).
``import feast`` costs ~5 s, so it happens inside these functions only.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from features.repo.definitions import build_definitions
from features.settings import FeaturesSettings

log = logging.getLogger(__name__)


def repo_config(settings: FeaturesSettings):
    from feast.repo_config import RegistryConfig, RepoConfig

    settings.repo_dir.mkdir(parents=True, exist_ok=True)
    if settings.online_store == "redis":
        online: dict[str, Any] = {"type": "redis", "connection_string": settings.redis_connection,
                                  "skip_dedup": settings.redis_skip_dedup}
    else:
        settings.sqlite_file.parent.mkdir(parents=True, exist_ok=True)
        online = {"type": "sqlite", "path": str(settings.sqlite_file.absolute())}
    return RepoConfig(
        project=settings.project,
        provider="local",
        registry=RegistryConfig(path=str(settings.registry_file.absolute()),
                                cache_ttl_seconds=settings.registry_cache_ttl_seconds),
        online_store=online,
        offline_store={"type": "file"},
        entity_key_serialization_version=3,
        repo_path=Path(settings.repo_dir).absolute(),
    )


def write_repo_yaml(config, repo_dir: Path) -> Path:
    """``repo_dir/feature_store.yaml`` for ``config`` (Feast's ``RepoConfig.write_to_path``
    writes its internal field names, which ``FeatureStore(repo_path=...)`` cannot read back)."""
    import yaml

    raw = json.loads(config.model_dump_json(by_alias=True, exclude={"repo_path"}, exclude_unset=True))
    path = Path(repo_dir) / "feature_store.yaml"
    tmp = path.with_suffix(f".yaml.tmp{os.getpid()}")
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    os.replace(tmp, path)
    return path


def open_store(settings: FeaturesSettings):
    from feast import FeatureStore

    return FeatureStore(config=repo_config(settings))


def apply_repo(settings: FeaturesSettings, store=None):
    """Register entities / sources / views and create online tables. Idempotent."""
    store = store or open_store(settings)
    for entity in ("user", "item", "advertiser"):
        (settings.offline_root / f"{entity}_stream").mkdir(parents=True, exist_ok=True)
    objects = build_definitions(settings.offline_root, settings.catalog_path, settings.feature_ttl_days)
    store.apply(objects)
    store.refresh_registry()
    write_repo_yaml(store.config, Path(settings.repo_dir))
    log.info("applied Feast repo: project %s, %d objects, online store %s, registry %s",
             settings.project, len(objects), settings.online_store, settings.registry_file)
    return store


def delete_redis_project_keys(settings: FeaturesSettings) -> int:
    """Delete every online key of ``settings.project`` from Redis (Feast's Redis keys end with
    the project name; ``FeatureStore.teardown`` misses stream feature views). For tests and
    benches that use a throw-away project on a shared Redis."""
    import redis

    host, _, rest = settings.redis_connection.partition(":")
    client = redis.Redis(host=host or "127.0.0.1", port=int(rest.split(",")[0] or 6379))
    keys = list(client.scan_iter(match=b"*" + settings.project.encode(), count=1000))
    for i in range(0, len(keys), 1000):
        client.delete(*keys[i:i + 1000])
    return len(keys)
