"""Disk and series stay bounded (issue 28, item 9) and publishing survives a bad disk day
(point 10): registry versions and index artifacts are pruned to the last N plus the serving and
rollback ones, old versions' metric series go, files and folders are fsynced before they are
published, an unloadable CURRENT falls back to the previous good version, and a refused artifact
is rebuilt instead of retried forever. Real registry, real FAISS, real retrieval service."""

from __future__ import annotations

import gc
import logging
import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from index_refresher.builder import build_artifact
from index_refresher.refresher import RegistryRefresher, RetrievalAdminClient
from model.towers import TwoTowerModel
from registry.index_artifact import INDEX_FILE, latest_artifact, list_artifacts
from registry.serving_model import registry_model_loader
from registry.store import WEIGHTS, ModelRegistry
from retrieval.service import build_service, create_app
from tests.support.index_rigs import running_server, tiny_registry
from tests.support.tiny_models import tiny_config


def publish(reg: ModelRegistry, n: int) -> list[str]:
    config = tiny_config()
    return [reg.publish(TwoTowerModel(config), config, {"i": i}, {}) for i in range(n)]


def test_registry_keeps_the_last_n_and_the_current_and_rollback_ones(tmp_path):
    reg = ModelRegistry(tmp_path, keep_versions=3)
    ids = publish(reg, 7)
    assert reg.versions() == ids[-3:]
    assert sorted(p.name for p in (tmp_path / "versions").iterdir()) == ids[-3:]  # nothing half-deleted
    assert reg.rollback() == ids[-2]  # rollback still works
    more = publish(reg, 4)
    assert reg.current_version() == more[-1] and reg.versions() == more[-3:]
    reg.set_current(more[-2])  # serving an older one: it and its rollback target outlive publishes
    config = tiny_config()
    extra = [reg.publish(TwoTowerModel(config), config, {}, {}, make_current=False) for _ in range(3)]
    assert set(reg.versions()) == {more[-3], more[-2], *extra}
    assert reg.rollback() == more[-3] and reg.load().version == more[-3]


def test_retention_keeps_the_rollback_target_of_an_old_current(tmp_path):
    reg = ModelRegistry(tmp_path, keep_versions=2)
    ids = publish(reg, 4)
    reg.set_current(ids[-1])
    assert reg.rollback() == ids[-2]
    # two newer versions published without becoming current: current (ids[-2]) and the one
    # before it (ids[-3], gone already) or the newest two must stay
    config = tiny_config()
    extra = [reg.publish(TwoTowerModel(config), config, {}, {}, make_current=False) for _ in range(3)]
    assert reg.current_version() == ids[-2]
    assert set(reg.versions()) == {ids[-2], *extra[-2:]}
    assert reg.load().version == ids[-2]


def test_the_keep_setting_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVCG_REGISTRY_KEEP_VERSIONS", "2")
    reg = ModelRegistry(tmp_path)
    ids = publish(reg, 4)
    assert reg.versions() == ids[-2:]


def test_publish_fsyncs_the_files_and_the_folders_before_and_after_the_renames(tmp_path, monkeypatch):
    synced: list[str] = []
    real = os.fsync

    def recording_fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    reg = ModelRegistry(tmp_path)
    version = publish(reg, 1)[0]
    names = [Path(p).name for p in synced]
    assert WEIGHTS in names and "manifest.json" in names
    assert str(tmp_path / "versions") in synced and str(tmp_path) in synced  # the renames are durable
    assert synced.index(str(tmp_path / "versions")) < synced.index(str(tmp_path))  # version, then CURRENT
    assert reg.current_version() == version


def test_an_unloadable_current_falls_back_to_the_previous_good_version(tmp_path, caplog):
    reg = ModelRegistry(tmp_path)
    v1, v2 = publish(reg, 2)
    (tmp_path / "versions" / v2 / WEIGHTS).write_bytes(b"torn")
    with caplog.at_level(logging.ERROR, logger="registry.store"):
        model = reg.load()
    assert model.version == v1 and f"current version {v2} cannot be loaded" in caplog.text
    (tmp_path / "CURRENT").write_text("garbage\n")  # a CURRENT naming nothing
    assert reg.load().version == v1
    with pytest.raises(Exception):
        reg.load(v2)  # an explicit version is never substituted


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, catalog, paths = tiny_registry(tmp_path_factory.mktemp("retention"), n_items=80, versions=2)
    return settings, catalog, [p.parent.name for p in paths]


def test_a_refused_artifact_is_rebuilt_once_not_retried_forever(world, tmp_path):
    settings, catalog, (v1, v2) = world
    settings = settings.model_copy(update={"index_root": tmp_path / "indexes"})
    bad = build_artifact(registry_model_loader(settings.registry_root)(v2), settings, catalog=catalog, progress=False)
    with open(bad / INDEX_FILE, "r+b") as f:
        f.truncate(100)
    service = build_service(settings)
    with running_server(create_app(service)) as url:
        refresher = RegistryRefresher(settings, registry_model_loader(settings.registry_root),
                                      ModelRegistry(settings.registry_root).current_version,
                                      RetrievalAdminClient(url), progress=False)
        assert refresher.refresh_once() == v2 == service.state.current.model_version
        assert refresher.metrics.artifacts_rebuilt._value.get() == 1
        assert not bad.exists() and latest_artifact(settings.index_root, v2) != bad
        assert service.metrics.refused_artifacts.labels("truncated")._value.get() == 1


def test_index_artifacts_are_pruned_on_push_keeping_serving_and_previous(world, tmp_path):
    settings, catalog, (v1, v2) = world
    settings = settings.model_copy(update={"index_root": tmp_path / "indexes", "keep_index_artifacts": 1})
    load = registry_model_loader(settings.registry_root)
    v1_paths = [build_artifact(load(v1), settings, catalog=catalog, progress=False) for _ in range(3)]
    v2_paths = [build_artifact(load(v2), settings, catalog=catalog, progress=False) for _ in range(3)]
    (settings.index_root / "v999999" / "ixgone").mkdir(parents=True)  # a model version no longer in the registry
    service = build_service(settings)
    assert service.loader.load(v1, v1_paths[0].name).ok  # serving the oldest v1 artifact
    with running_server(create_app(service)) as url:
        refresher = RegistryRefresher(settings, load, ModelRegistry(settings.registry_root).current_version,
                                      RetrievalAdminClient(url), progress=False)
        assert refresher.refresh_once() == v2
    assert list_artifacts(settings.index_root, v2) == [v2_paths[-1]]  # the newest, the one pushed
    # v1: the newest kept, and the one it rolls back to (the first, still the service's previous)
    assert list_artifacts(settings.index_root, v1) == [v1_paths[0], v1_paths[-1]]
    assert not (settings.index_root / "v999999").exists()


def test_old_serving_pairs_series_are_removed(world, tmp_path):
    settings, catalog, (v1, v2) = world
    extra = build_artifact(registry_model_loader(settings.registry_root)(v1), settings, catalog=catalog,
                           progress=False)
    first = sorted(p.name for p in list_artifacts(settings.index_root, v1) if p != extra)[0]
    service = build_service(settings)
    with TestClient(create_app(service)) as client:
        for model, index in ((v1, first), (v2, None), (v1, extra.name)):
            assert client.post("/admin/load", json={"model_version": model, "index_version": index}).status_code == 200
            client.get("/retrieve", params={"user_id": "u1", "k": 3})
        gc.collect()
        text = client.get("/metrics").text
    assert f'index_version="{first}"' not in text  # released: its series are gone
    assert f'index_version="{extra.name}"' in text and f'model_version="{v2}"' in text  # serving, previous
