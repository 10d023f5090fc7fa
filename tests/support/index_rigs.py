"""Index test rigs: the retrieval app on a real socket (uvicorn in a thread), and a registry of
tiny genuinely trained models with index artifacts."""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Iterator

from convcg.kafka.broker import free_port
from index_refresher.settings import RefresherSettings
from retrieval.settings import RetrievalSettings

STARTUP_TIMEOUT_S = 20.0


class IndexTestSettings(RefresherSettings, RetrievalSettings):
    """Both sides of the index on one settings object, as one ``CONVCG_INDEX_`` environment
    configures both processes; tests hand it to the refresher and to the service alike."""


@contextlib.contextmanager
def running_server(app, host: str = "127.0.0.1", port: int | None = None,
                   log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a background thread; yields the base URL."""
    import uvicorn

    port = port or free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on {host}:{port}")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def tiny_registry(root, n_items: int = 300, versions: int = 2, build_indexes: bool = True,
                  **settings_overrides):
    """A registry with ``versions`` genuinely trained tiny models over a synthetic catalog
    (written to ``root/catalog.parquet``) and one index artifact per version.

    Returns ``(settings, catalog, [artifact paths])``; the last version is current.
    """
    from pathlib import Path

    from index_refresher.builder import build_artifact
    from registry.serving_model import registry_model_loader
    from tests.support.tiny_models import train_tiny_model_for_tests
    from training.synthetic import synthetic_catalog

    root = Path(root)
    catalog = synthetic_catalog(n_items)
    root.mkdir(parents=True, exist_ok=True)
    catalog.to_parquet(root / "catalog.parquet", index=False)
    settings = IndexTestSettings(registry_root=root / "registry", index_root=root / "registry" / "indexes",
                             catalog_path=root / "catalog.parquet",
                             new_items_path=root / "new_items.parquet", **settings_overrides)
    load = registry_model_loader(settings.registry_root)
    paths = []
    for seed in range(versions):
        version = train_tiny_model_for_tests(settings.registry_root, catalog, seed=seed)
        if build_indexes:
            paths.append(build_artifact(load(version), settings, catalog=catalog, progress=False))
    return settings, catalog, paths
