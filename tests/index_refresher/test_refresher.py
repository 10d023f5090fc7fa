"""The refresher end to end: registry -> built artifact -> service; impressions -> new items."""

from __future__ import annotations

import threading
import time

import httpx
import orjson
import pandas as pd
from click.testing import CliRunner

from convcg.contract import Impression, event_to_dict
from convcg.kafka.io import json_producer
from index_refresher.builder import read_catalog
from index_refresher.new_items import NewItemWatcher
from index_refresher.refresher import RegistryRefresher, RetrievalAdminClient
from registry.index_artifact import latest_artifact, load_artifact
from registry.serving_model import registry_model_loader
from registry.store import ModelRegistry
from retrieval.service import build_service, create_app
from tests.support.index_rigs import running_server, tiny_registry
from tests.support.tiny_models import train_tiny_model_for_tests

N_ITEMS = 200
RETRIEVABLE_WITHIN_S = 10.0


def impression(n: int, item_id: str, advertiser_id: str = "a1") -> bytes:
    imp = Impression(event_id=f"e{n}", impression_id=f"imp{n}", ts=1.7e9 + n, user_id=f"u{n % 5}",
                     item_id=item_id, advertiser_id=advertiser_id, surface="home", position=n % 10)
    return orjson.dumps(event_to_dict(imp))


def served_items(client: httpx.Client, k: int) -> dict:
    return client.get("/retrieve", params={"user_id": "u1", "k": k}).json()


def test_refresher_builds_and_pushes_new_versions_and_new_items(tmp_path, broker, topics):
    settings, catalog, _ = tiny_registry(tmp_path, n_items=N_ITEMS, versions=1, build_indexes=False)
    registry = ModelRegistry(settings.registry_root)
    v1 = registry.current_version()
    service = build_service(settings)
    with running_server(create_app(service)) as url, httpx.Client(base_url=url, timeout=30) as client:
        admin = RetrievalAdminClient(url)
        refresher = RegistryRefresher(settings, registry_model_loader(settings.registry_root),
                                      registry.current_version, admin, progress=False)
        # 1. a version with no index: built, then loaded by the service
        assert client.get("/health").status_code == 503
        assert refresher.refresh_once() == v1
        assert latest_artifact(settings.index_root, v1) is not None
        assert served_items(client, 5)["model_version"] == v1
        assert refresher.refresh_once() is None  # nothing new

        # 2. new items seen on the impressions topic become retrievable within seconds
        stop = threading.Event()
        watcher = NewItemWatcher(broker.bootstrap, topics.impressions, admin,
                                 set(read_catalog(settings.catalog_path)["item_id"]), settings.new_items_path,
                                 flush_s=0.2)
        thread = threading.Thread(target=watcher.run, args=(stop,), daemon=True)
        thread.start()
        try:
            assert watcher.ready.wait(30), "watcher did not attach to the impressions topic"
            producer = json_producer(broker.bootstrap)
            producer.send(topics.impressions, key=b"u1", value=impression(1, "i3"))  # known item
            producer.send(topics.impressions, key=b"u2", value=b"{not json")  # malformed: skipped
            producer.send(topics.impressions, key=b"u3", value=impression(2, "fresh-1", "a7"))
            producer.send(topics.impressions, key=b"u4", value=impression(3, "fresh-1", "a7"))
            producer.flush()
            sent = time.monotonic()
            while time.monotonic() - sent < RETRIEVABLE_WITHIN_S:
                ids = [h["item_id"] for h in served_items(client, N_ITEMS + 1)["items"]]
                if "fresh-1" in ids:
                    break
                time.sleep(0.1)
            took = time.monotonic() - sent
            assert "fresh-1" in ids, f"new item not retrievable after {took:.1f}s"
            print(f"new item retrievable {took:.2f}s after it was produced")
            assert len(ids) == N_ITEMS + 1
            deadline = time.monotonic() + 5
            while watcher.malformed < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert watcher.added == 1 and watcher.malformed == 1
        finally:
            stop.set()
            thread.join(10)
        saved = pd.read_parquet(settings.new_items_path)
        assert saved.to_dict("records") == [{"item_id": "fresh-1", "advertiser_id": "a7"}]

        # 3. a new model version: the CLI's one-shot refresher builds it (catalog + new items)
        v2 = train_tiny_model_for_tests(settings.registry_root, catalog, seed=1)
        env = {"CONVCG_INDEX_REGISTRY_ROOT": str(settings.registry_root),
               "CONVCG_INDEX_INDEX_ROOT": str(settings.index_root),
               "CONVCG_INDEX_CATALOG_PATH": str(settings.catalog_path),
               "CONVCG_INDEX_NEW_ITEMS_PATH": str(settings.new_items_path),
               "CONVCG_INDEX_RETRIEVAL_URL": url,
               "CONVCG_INDEX_BUILD_NICENESS": "0"}  # don't renice the whole test process
        from loop.cli import main

        result = CliRunner().invoke(main, ["refresher", "--once"], env=env)
        assert result.exit_code == 0, result.output
        assert f'"pushed": "{v2}"' in result.output
        body = served_items(client, N_ITEMS + 1)
        assert body["model_version"] == v2
        assert "fresh-1" in [h["item_id"] for h in body["items"]]
        artifact = load_artifact(latest_artifact(settings.index_root, v2))
        assert artifact.count == N_ITEMS + 1 and artifact.idmap.contains("fresh-1")
        assert service.state.current.delta.item_ids == ()  # now in the index proper


def test_refresher_does_not_retry_a_version_it_cannot_build(tmp_path):
    settings, catalog, _ = tiny_registry(tmp_path, n_items=50, versions=1, build_indexes=False)
    settings.catalog_path.unlink()  # the build fails: no catalog
    service = build_service(settings)
    with running_server(create_app(service)) as url:
        refresher = RegistryRefresher(settings, registry_model_loader(settings.registry_root),
                                      ModelRegistry(settings.registry_root).current_version,
                                      RetrievalAdminClient(url), progress=False)
        assert refresher.refresh_once() is None
        assert refresher.failed == ModelRegistry(settings.registry_root).current_version()
        assert service.state.current is None
    # and with the service down nothing is built or marked failed: it retries next poll
    catalog.to_parquet(settings.catalog_path, index=False)
    refresher.failed = None
    assert refresher.refresh_once() is None and refresher.failed is None
    assert latest_artifact(settings.index_root, refresher.current_version()) is None


def test_build_command_writes_an_artifact(tmp_path):
    from loop.cli import main

    settings, _, _ = tiny_registry(tmp_path, n_items=60, versions=1, build_indexes=False)
    env = {"CONVCG_INDEX_REGISTRY_ROOT": str(settings.registry_root),
           "CONVCG_INDEX_INDEX_ROOT": str(settings.index_root)}
    result = CliRunner().invoke(main, ["index", "build", "--catalog", str(settings.catalog_path)], env=env)
    assert result.exit_code == 0, result.output
    version = ModelRegistry(settings.registry_root).current_version()
    assert load_artifact(latest_artifact(settings.index_root, version)).count == 60
    result = CliRunner().invoke(main, ["index", "build", "--catalog", str(tmp_path / "nope.parquet")], env=env)
    assert result.exit_code != 0 and "not found" in result.output
