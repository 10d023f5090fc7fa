"""Online user features from the real features service (Feast SQLite store) feed the query."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from convcg.metrics_scrape import metric_sum, parse_samples
from registry.serving_model import registry_model_loader
from retrieval.service import build_service, create_app
from retrieval.user_features import (
    HttpUserFeatureSource,
    OnlineStoreUserFeatureSource,
    features_from_response,
)
from tests.support.index_rigs import running_server, tiny_registry

T = 1_700_000_000.0
TOKEN = "s3cret"


def written_store(root, **settings):
    """A real Feast online store holding u1's row, written by the features sink's writer."""
    from features.settings import FeaturesSettings
    from features.sink.worker import Batch, FeastWriter
    from tests.support.feature_samples import full_update

    s = FeaturesSettings(repo_dir=root / "feast", labels_dir=root / "labels", project=f"t{uuid.uuid4().hex[:10]}",
                         api_token=TOKEN, **settings)
    FeastWriter(s).write_online(Batch(updates=[full_update("user", "u1", T, 3)]))  # last items ["i3"]
    return s


@pytest.fixture(scope="module")
def features_store(tmp_path_factory):
    return written_store(tmp_path_factory.mktemp("features"), online_store="sqlite")


@pytest.fixture(scope="module")
def features_url(features_store):
    """The features component's HTTP service over a real Feast SQLite online store."""
    from features.service import create_app as features_app

    with running_server(features_app(features_store)) as url:
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


def test_the_store_source_reads_in_process_what_the_features_service_answers(tmp_path, features_store,
                                                                             features_url):
    """``features_source=store``: the service opens the features component's Feast repo by path,
    reads the same features as over HTTP, and so answers the same query."""
    over_http = HttpUserFeatureSource(features_url, timeout_s=5, token=TOKEN).get("u1")
    in_process = OnlineStoreUserFeatureSource(features_store.repo_dir)
    assert in_process.get("u1") == over_http and over_http["last_engaged_items"] == ["i3"]
    assert in_process.get("never-seen") == {}

    by_store, _, _ = tiny_registry(tmp_path / "a", n_items=150, versions=1, features_source="store",
                                   features_repo=features_store.repo_dir)
    by_http, _, _ = tiny_registry(tmp_path / "b", n_items=150, versions=1, features_url=features_url,
                                  features_token=TOKEN)
    got = {}
    for name, settings in (("store", by_store), ("http", by_http)):
        service = build_service(settings)
        assert service.loader.load().ok
        with TestClient(create_app(service)) as client:
            got[name] = [h["item_id"] for h in client.get("/retrieve", params={"user_id": "u1", "k": 20}).json()["items"]]
            assert "convcg_retrieval_feature_lookup_failures_total 0.0" in client.get("/metrics").text
    assert isinstance(build_service(by_store).feature_source, OnlineStoreUserFeatureSource)
    assert got["store"] == got["http"] and len(got["store"]) == 20


def test_the_store_source_reads_redis_as_the_feast_sdk_does(tmp_path):
    """On Redis (the one every machine runs): the in-process read, and Feast's own SDK opening
    the same repo by path, see the row the sink wrote."""
    from feast import FeatureStore

    from features.repo.store import delete_redis_project_keys

    s = written_store(tmp_path, online_store="redis")
    try:
        feats = OnlineStoreUserFeatureSource(s.repo_dir).get("u1")
        assert feats["last_engaged_items"] == ["i3"] and feats["impressions_1h"] == 3
        sdk = FeatureStore(repo_path=str(s.repo_dir)).get_online_features(
            ["user_stream:last_engaged_items", "user_stream:impressions_1h"], [{"user_id": "u1"}]).to_dict()
        assert sdk["last_engaged_items"] == [["i3"]] and sdk["impressions_1h"] == [3]
    finally:
        delete_redis_project_keys(s)


def test_a_store_that_cannot_be_read_yet_is_served_without_features_until_it_can(tmp_path):
    """Started before the features component applied its repo: reads fail (counted) and the
    query goes without features; once the repo exists the next read finds the row. A store on a
    Redis nobody listens on fails the same way."""
    failures = []
    source = OnlineStoreUserFeatureSource(tmp_path / "feast", on_failure=lambda: failures.append(1))
    assert source.warm() is False
    assert source.get("u1") == {} and len(failures) == 1
    written = written_store(tmp_path, online_store="sqlite")
    assert source.get("u1")["last_engaged_items"] == ["i3"] and len(failures) == 1

    from features.repo.store import repo_config, write_repo_yaml

    down = written.model_copy(update={"online_store": "redis", "redis_connection": "127.0.0.1:1"})
    write_repo_yaml(repo_config(down), down.repo_dir)  # the same registry, its rows on a dead Redis
    down_source = OnlineStoreUserFeatureSource(down.repo_dir, on_failure=lambda: failures.append(1))
    assert down_source.get("u1") == {} and down_source.get("u2") == {} and len(failures) == 3
