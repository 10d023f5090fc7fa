"""Online user features from the real features service (Feast SQLite store) feed the query."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from convcg.metrics_scrape import metric_sum, parse_samples
from registry.item_tower import registry_model_loader
from retrieval.service import build_service, create_app
from retrieval.user_features import HttpUserFeatureSource, features_from_response
from tests.helpers_index import running_server, tiny_registry

T = 1_700_000_000.0
TOKEN = "s3cret"


@pytest.fixture(scope="module")
def features_url(tmp_path_factory):
    """The features component's HTTP service over a real Feast SQLite online store."""
    from features.service import create_app as features_app
    from features.settings import FeaturesSettings
    from features.sink import Batch, FeastWriter
    from tests.helpers_features import full_update

    root = tmp_path_factory.mktemp("features")
    s = FeaturesSettings(repo_dir=root / "feast", labels_dir=root / "labels", online_store="sqlite",
                         project=f"t{uuid.uuid4().hex[:10]}", api_token=TOKEN)
    FeastWriter(s).write_online(Batch(updates=[full_update("user", "u1", T, 3)]))  # last items ["i3"]
    with running_server(features_app(s)) as url:
        yield url


def test_features_from_response_shapes():
    assert features_from_response({"results": [{"features": {"ctr_7d": 0.1, "x": None}}]}) == {"ctr_7d": 0.1}
    assert features_from_response({"results": []}) == {}
    assert features_from_response(["nope"]) == {}


def test_user_features_change_the_query_and_failures_do_not_fail_it(tmp_path, features_url):
    settings, _, _ = tiny_registry(tmp_path, n_items=150, versions=1, features_url=features_url,
                                   features_token=TOKEN)
    source = HttpUserFeatureSource(features_url, settings.features_path, timeout_s=5, token=TOKEN)
    feats = source.get("u1")
    assert feats["last_engaged_items"] == ["i3"] and feats["impressions_1h"] == 3
    assert source.get("never-seen") == {}  # missing values are dropped

    service = build_service(settings)
    assert service.loader.load().ok
    model = registry_model_loader(settings.registry_root)(service.state.current.model_version)
    with TestClient(create_app(service)) as client:
        got = client.get("/retrieve", params={"user_id": "u1", "k": 20}).json()["items"]
        samples = parse_samples(client.get("/metrics").text)
    # the lookup is timed on its own, inside the query's time
    assert metric_sum(samples, "convcg_retrieval_feature_lookup_seconds_count") == 1
    lookup_s = metric_sum(samples, "convcg_retrieval_feature_lookup_seconds_sum")
    assert 0 < lookup_s < metric_sum(samples, "convcg_retrieval_query_seconds_sum")
    want = service.state.current.search(model.embed_queries([{"user_id": "u1", "surface": "home", **feats}]), 20)[0]
    without = service.state.current.search(model.embed_queries([{"user_id": "u1", "surface": "home"}]), 20)[0]
    assert [h["item_id"] for h in got] == [i for i, _ in want]
    assert [i for i, _ in want] != [i for i, _ in without]  # the features really matter

    # wrong token: the lookup fails, the query is still answered (without features) and counted
    settings.features_token = "wrong"
    service = build_service(settings)
    service.loader.load()
    with TestClient(create_app(service)) as client:
        r = client.get("/retrieve", params={"user_id": "u1", "k": 20})
        assert r.status_code == 200
        assert [h["item_id"] for h in r.json()["items"]] == [i for i, _ in without]
        assert "convcg_retrieval_feature_lookup_failures_total 1.0" in client.get("/metrics").text
