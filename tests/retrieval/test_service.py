"""The retrieval service over real tiny models and real FAISS (request level, FastAPI TestClient)."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from convcg.metrics_scrape import metric_sum, parse_samples
from index_refresher.builder import build_from_vectors
from index_refresher.index_build import IndexParams
from registry.index_artifact import INDEX_FILE, read_manifest
from registry.serving_model import registry_model_loader
from retrieval.service import build_service, create_app
from tests.support.index_rigs import tiny_registry

N_ITEMS = 300


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, catalog, paths = tiny_registry(tmp_path_factory.mktemp("retrieval"), n_items=N_ITEMS)
    return settings, catalog, [p.parent.name for p in paths]


@pytest.fixture
def client(world):
    settings, _, _ = world
    service = build_service(settings)
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def load(client, version, index_version=None):
    return client.post("/admin/load", json={"model_version": version, "index_version": index_version})


def metric(client, name: str, **labels: str) -> float:
    return metric_sum(parse_samples(client.get("/metrics").text), name, **labels)


def expected_top(world, version, user_id, surface, k):
    """Exact top-k computed directly from the model version's two towers."""
    settings, catalog, _ = world
    model = registry_model_loader(settings.registry_root)(version)
    q = model.embed_queries([{"user_id": user_id, "surface": surface}])[0]
    scores = model.embed_items(catalog) @ q
    order = np.argsort(-scores)[:k]
    return catalog["item_id"].to_numpy()[order].tolist(), scores[order]


def test_unavailable_until_an_index_is_loaded(client):
    assert client.get("/health").status_code == 503
    r = client.get("/retrieve", params={"user_id": "u1"})
    assert r.status_code == 503 and "no index loaded" in r.json()["error"]


def test_retrieve_uses_the_model_version_of_the_index(client, world):
    _, _, (v1, v2) = world
    assert load(client, v1).json()["model_version"] == v1
    r = client.get("/retrieve", params={"user_id": "u7", "surface": "search", "k": 10})
    body = r.json()
    assert r.status_code == 200 and body["model_version"] == v1
    assert body["index_version"] == client.service.state.current.index_version
    want_ids, want_scores = expected_top(world, v1, "u7", "search", 10)
    assert [h["item_id"] for h in body["items"]] == want_ids
    np.testing.assert_allclose([h["score"] for h in body["items"]], want_scores, rtol=1e-4, atol=1e-5)
    post = client.post("/retrieve", json={"user_id": "u7", "surface": "search", "k": 10}).json()
    assert post["items"] == body["items"]
    # the other version ranks differently: the result really depends on the version served
    assert expected_top(world, v2, "u7", "search", 10)[0] != want_ids
    assert client.get("/health").json()["serving"]["model_version"] == v1


@pytest.mark.parametrize("params,message", [
    ({"user_id": "u1", "k": 0}, "k must be between 1 and 1000"),
    ({"user_id": "u1", "k": 5000}, "k must be between 1 and 1000"),
    ({"k": 5}, "user_id is required"),
    ({"user_id": "u1", "surface": "feed"}, "unknown surface"),
])
def test_bad_requests_get_400_with_a_message(client, world, params, message):
    load(client, world[2][0])
    r = client.get("/retrieve", params=params)
    assert r.status_code == 400 and message in r.json()["error"]
    r = client.post("/retrieve", json=params)
    assert r.status_code == 400 and message in r.json()["error"]
    assert metric(client, "convcg_retrieval_queries_total", outcome="bad_request") == 2
    assert client.get("/retrieve", params={"user_id": "u1", "k": 3}).status_code == 200


def test_invalid_json_body_is_a_400(client, world):
    load(client, world[2][0])
    r = client.post("/retrieve", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["error"]


def corrupt_copy(world, tmp_path, how: str) -> tuple[str, str]:
    """A broken artifact for v2: returns (model_version, index_version) to ask the service for."""
    settings, _, (v1, v2) = world
    src = settings.index_root / v2
    good = sorted(p for p in src.iterdir() if p.is_dir() and not p.name.startswith("."))[0]
    name = f"ix-broken-{how}"
    dst = src / name
    shutil.rmtree(dst, ignore_errors=True)
    if how == "truncated":
        shutil.copytree(good, dst)
        data = (dst / INDEX_FILE).read_bytes()
        (dst / INDEX_FILE).write_bytes(data[: len(data) - 100])
        manifest = read_manifest(dst)
        manifest["index_version"] = name
        (dst / "manifest.json").write_text(__import__("json").dumps(manifest))
    elif how == "dimension":  # an index of 8-d vectors (another model config) under v2
        rng = np.random.default_rng(0)
        vecs = rng.standard_normal((50, 8)).astype(np.float32)
        path = build_from_vectors(settings.index_root, v2, [f"i{i}" for i in range(50)], vecs,
                                  IndexParams(), 10, 10, 0.0, progress=False)
        path.rename(dst)
        manifest = read_manifest(dst)
        manifest["index_version"] = name
        (dst / "manifest.json").write_text(__import__("json").dumps(manifest))
    elif how == "version_mismatch":  # v1's index placed where v2's should be
        v1_index = sorted(p for p in (settings.index_root / v1).iterdir() if p.is_dir())[0]
        shutil.copytree(v1_index, dst)
    return v2, name


@pytest.mark.parametrize("how", ["truncated", "dimension", "version_mismatch"])
def test_broken_artifact_is_refused_and_current_keeps_serving(client, world, tmp_path, how):
    v1 = world[2][0]
    load(client, v1)
    before = client.get("/retrieve", params={"user_id": "u3", "k": 5}).json()
    version, index_version = corrupt_copy(world, tmp_path, how)
    r = load(client, version, index_version)
    assert r.status_code == 409
    assert r.json()["reason"] == how and r.json()["serving"]["model_version"] == v1
    after = client.get("/retrieve", params={"user_id": "u3", "k": 5})
    assert after.status_code == 200 and after.json() == before
    assert metric(client, "convcg_retrieval_refused_artifacts_total", reason=how) == 1
    assert client.get("/admin/status").json()["last_load"]["reason"] == how


def test_unknown_model_version_is_refused(client, world):
    load(client, world[2][0])
    r = load(client, "v999999")
    assert r.status_code == 409 and r.json()["reason"] == "model" and "does not exist" in r.json()["error"]
    assert load(client, "../etc").status_code == 400


def test_rollback_swaps_back_and_forth(client, world):
    _, _, (v1, v2) = world
    assert client.post("/admin/rollback").status_code == 409  # nothing to roll back to
    load(client, v1)
    load(client, v2)
    assert client.get("/retrieve", params={"user_id": "u1"}).json()["model_version"] == v2
    r = client.post("/admin/rollback").json()
    assert r["serving"]["model_version"] == v1 and r["previous"]["model_version"] == v2
    assert client.get("/retrieve", params={"user_id": "u1"}).json()["model_version"] == v1
    client.post("/admin/rollback")
    assert client.get("/retrieve", params={"user_id": "u1"}).json()["model_version"] == v2
    assert metric(client, "convcg_retrieval_swaps_total", kind="rollback") == 2
    assert metric(client, "convcg_retrieval_swaps_total", kind="load") == 2
    assert metric(client, "convcg_retrieval_serving_version",
                  index_version=client.service.state.current.index_version, model_version=v2) == 1


def test_incremental_add_is_retrievable_and_survives_a_swap(client, world):
    settings, catalog, (v1, v2) = world
    load(client, v1)
    everything = {"user_id": "u5", "k": N_ITEMS + 1}
    new_item = {"item_id": "brand-new-item", "advertiser_id": "a3", "category": "c1", "price": 20.0}
    assert "brand-new-item" not in [h["item_id"] for h in client.get("/retrieve", params=everything).json()["items"]]
    r = client.post("/admin/items", json={"items": [new_item]})
    assert r.status_code == 200 and r.json()["added"] == 1 and r.json()["items"] == N_ITEMS + 1
    assert client.post("/admin/items", json={"items": [new_item]}).json()["added"] == 0  # idempotent

    def score_of(version):
        body = client.get("/retrieve", params=everything).json()
        assert body["model_version"] == version
        hits = {h["item_id"]: h["score"] for h in body["items"]}
        model = registry_model_loader(settings.registry_root)(version)
        want = float(model.embed_items(pd.DataFrame([new_item]))[0]
                     @ model.embed_queries([{"user_id": "u5", "surface": "home"}])[0])
        return hits["brand-new-item"], want

    got, want = score_of(v1)
    assert got == pytest.approx(want, abs=1e-5)
    load(client, v2)  # re-embedded with v2's item tower and carried over
    got, want = score_of(v2)
    assert got == pytest.approx(want, abs=1e-5)
    assert metric(client, "convcg_retrieval_items_added_total") == 1
    assert metric(client, "convcg_retrieval_index_items") == N_ITEMS + 1
    bad = client.post("/admin/items", json={"items": [{"item_id": "x"}]})
    assert bad.status_code == 400 and "advertiser_id" in bad.json()["error"]
