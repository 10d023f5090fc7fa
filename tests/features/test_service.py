"""The HTTP lookup service over real Feast online stores (SQLite file and Redis)."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient

from features.settings import FeaturesSettings
from features.sink.worker import Batch, FeastWriter
from tests.support.feature_samples import full_update

T = 1_700_000_000.0


@pytest.fixture(params=["sqlite", "redis"])
def served(request, tmp_path):
    """A store with a few entities written through the sink's writer, and a client."""
    from features.service import create_service

    s = FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels",
                         online_store=request.param, project=f"t{uuid.uuid4().hex[:10]}",
                         api_token="s3cret")
    writer = FeastWriter(s)
    writer.write_online(Batch(updates=[full_update("user", f"u{i}", T + i, i) for i in range(5)]
                              + [full_update("item", "i1", T, 42)]))
    client = TestClient(create_service(s))  # the served app: fast path in front of FastAPI
    client.headers["Authorization"] = "Bearer s3cret"
    yield client
    client.close()
    if request.param == "redis":
        from features.repo.store import delete_redis_project_keys

        assert delete_redis_project_keys(s) == 6  # this run's keys only, off the shared Redis


def test_batch_lookup_returns_values_in_request_order(served):
    r = served.post("/online-features", json={"feature_view": "user_stream",
                                              "entity_ids": ["u3", "missing", "u0"],
                                              "features": ["impressions_1h", "ctr_7d", "last_engaged_items"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["features"] == ["impressions_1h", "ctr_7d", "last_engaged_items"]
    u3, missing, u0 = body["results"]
    assert u3 == {"entity_id": "u3", "event_ts": T + 3,
                  "features": {"impressions_1h": 3, "ctr_7d": 0.003, "last_engaged_items": ["i3"]}}
    assert missing["event_ts"] is None and set(missing["features"].values()) == {None}
    assert u0["features"]["impressions_1h"] == 0


def test_single_lookup_all_features(served):
    r = served.get("/online-features/item_stream/i1")
    assert r.status_code == 200
    feats = r.json()["results"][0]["features"]
    assert feats["conversions_7d"] == 42 and len(feats) == 11
    assert served.get("/online-features/item_stream/i1?features=cvr_7d").json()["results"][0]["features"] == {
        "cvr_7d": 0.042}


@pytest.mark.parametrize("body, status, message", [
    ({"feature_view": "nope", "entity_ids": ["u1"]}, 404, "unknown feature view 'nope'"),
    ({"feature_view": "user_stream", "entity_ids": ["u1"], "features": ["bogus"]}, 400, "unknown feature(s) ['bogus']"),
    ({"feature_view": "user_stream", "entity_ids": []}, 422, "entity_ids"),
    ({"feature_view": "user_stream", "entity_ids": "u1"}, 422, "entity_ids"),
    ({"entity_ids": ["u1"]}, 422, "feature_view"),
    ({"feature_view": "user_stream", "entity_ids": ["u"] * 1001}, 400, "too many entities"),
])
def test_bad_requests_get_a_clear_4xx(served, body, status, message):
    r = served.post("/online-features", json=body)
    assert r.status_code == status
    assert message in r.json()["detail"]


def test_malformed_json_and_auth(served):
    r = served.post("/online-features", content=b"{nope", headers={"content-type": "application/json"})
    assert r.status_code == 422 and "malformed request" in r.json()["detail"]
    r = served.get("/online-features/user_stream/u1", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401 and "bearer token" in r.json()["detail"]
    r = served.post("/online-features", json={"feature_view": "user_stream", "entity_ids": ["u1"]},
                    headers={"Authorization": ""})
    assert r.status_code == 401


def test_health_and_metrics(served):
    assert served.get("/health").json() == {"status": "ok", "ready": True}
    served.get("/online-features/user_stream/u1")
    text = served.get("/metrics").text
    assert 'convcg_features_requests_total{endpoint="single",status="200"}' in text
    assert "convcg_features_request_seconds_bucket" in text
    assert "convcg_features_freshness_seconds_bucket" in text  # written by the writer above


def test_single_lookup_fast_path_errors_and_encoded_ids(served):
    r = served.get("/online-features/nope/u1")
    assert r.status_code == 404 and "unknown feature view 'nope'" in r.json()["detail"]
    r = served.get("/online-features/user_stream/u%203")  # id "u 3": not stored, still answered
    assert r.status_code == 200 and r.json()["results"][0]["entity_id"] == "u 3"
    assert served.get("/online-features/user_stream/u3").json()["results"][0]["features"]["impressions_1h"] == 3
    assert served.get("/online-features/user_stream/").status_code == 404  # falls through to FastAPI
