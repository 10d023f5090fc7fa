"""The guards every HTTP service shares (issue 28, HTTP): a request body-size limit (413), the
token checked before the body is read (401, not 422), ``/admin/status`` behind the admin token,
generic 500 bodies and readiness-only health, and Prometheus ports bound to loopback; over the
real retrieval service (tiny models, FAISS) and the real features service (Feast SQLite store)."""

from __future__ import annotations

import ast
import logging
import sqlite3
import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from convcg.http_auth import install_http_guards
from features.settings import FeaturesSettings
from features.sink.worker import Batch, FeastWriter
from retrieval.service import build_service, create_app
from tests.support.feature_samples import full_update
from tests.support.index_rigs import tiny_registry

ROOT = Path(__file__).resolve().parents[3]
ADMIN, QUERY, FEATURES_TOKEN = "guard-admin", "guard-query", "guard-features"
T = 1_700_000_000.0
LIMIT = 4096


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, _, paths = tiny_registry(tmp_path_factory.mktemp("guards"), n_items=100, versions=1,
                                       admin_token=ADMIN, query_token=QUERY, max_body_bytes=LIMIT)
    return settings, paths[0].parent.name


@pytest.fixture
def retrieval(world):
    settings, version = world
    service = build_service(settings)
    assert service.loader.load(version).ok
    with TestClient(create_app(service), raise_server_exceptions=False) as client:
        client.service = service
        yield client


@pytest.fixture
def features(tmp_path):
    from features.service import create_service

    s = FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels", online_store="sqlite",
                         project=f"g{uuid.uuid4().hex[:10]}", api_token=FEATURES_TOKEN, max_body_bytes=LIMIT)
    FeastWriter(s).write_online(Batch(updates=[full_update("user", "uA", T, 7), full_update("user", "u1", T, 1)]))
    with TestClient(create_service(s), raise_server_exceptions=False) as client:
        client.settings = s
        yield client


def items_body(n: int) -> dict:
    return {"items": [{"item_id": f"big-{i:06d}", "advertiser_id": "a1"} for i in range(n)]}


# --- body size ------------------------------------------------------------------------------------

def test_an_oversized_body_is_413_and_nothing_changes(retrieval, features):
    before = retrieval.service.state.current
    r = retrieval.post("/admin/items", json=items_body(200), headers=bearer(ADMIN))  # ~9 KB > 4 KiB
    assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["error"]
    assert retrieval.service.state.current is before and before.size == 100
    r = retrieval.post("/retrieve", json={"user_id": "u1", "recent_items": ["x" * 100] * 60}, headers=bearer(QUERY))
    assert r.status_code == 413
    r = features.post("/online-features", json={"feature_view": "user_stream", "entity_ids": ["u1"] * 900},
                      headers=bearer(FEATURES_TOKEN))
    assert r.status_code == 413 and "larger than 4096 bytes" in r.json()["detail"]
    # a body the same size under the limit is read and answered
    r = retrieval.post("/admin/items", json=items_body(20), headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["added"] == 20


def test_a_body_sent_without_a_length_is_counted_as_it_arrives(retrieval, features):
    """Chunked transfer (no Content-Length): refused once the bytes received pass the limit."""
    payload = b'{"items": [' + b",".join([b'{"item_id": "c", "advertiser_id": "a1"}'] * 300) + b"]}"

    def chunks():
        for i in range(0, len(payload), 1000):
            yield payload[i:i + 1000]

    r = retrieval.post("/admin/items", content=chunks(), headers={**bearer(ADMIN), "content-type": "application/json"})
    assert r.status_code == 413, r.text
    r = features.post("/online-features", content=chunks(),
                      headers={**bearer(FEATURES_TOKEN), "content-type": "application/json"})
    assert r.status_code == 413, r.text


# --- the token before the body --------------------------------------------------------------------

@pytest.mark.parametrize("body", [b"{nope", b'{"feature_view": 3}', b"[]", b""], ids=["bad-json", "bad-field",
                                                                                    "not-object", "empty"])
def test_an_unauthenticated_malformed_request_is_401_not_422(features, retrieval, body):
    json_headers = {"content-type": "application/json"}
    for headers in ({}, bearer("wrong")):
        r = features.post("/online-features", content=body, headers={**json_headers, **headers})
        assert r.status_code == 401, r.text
        assert r.json() == {"detail": "missing or wrong bearer token (Authorization: Bearer <token>)"}
        for path in ("/retrieve", "/admin/load", "/admin/items"):
            r = retrieval.post(path, content=body, headers={**json_headers, **headers})
            assert r.status_code == 401, (path, r.text)
    # with the token, the same body is a 422 (features) / 400 (retrieval) that says why
    r = features.post("/online-features", content=body, headers={**json_headers, **bearer(FEATURES_TOKEN)})
    assert r.status_code == 422 and "malformed request" in r.json()["detail"]


# --- /admin/status, /health -----------------------------------------------------------------------

def test_admin_status_needs_the_admin_token_when_one_is_set(retrieval, world, tmp_path):
    for headers in ({}, bearer("wrong"), bearer(QUERY)):
        r = retrieval.get("/admin/status", headers=headers)
        assert r.status_code == 401 and "serving" not in r.json()
    r = retrieval.get("/admin/status", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["serving"]["model_version"] == world[1]
    schema = retrieval.get("/openapi.json").json()
    assert schema["paths"]["/admin/status"]["get"]["security"] == [{"adminToken": []}]
    # no token set: the service is open (it may then only bind loopback)
    settings, version = world
    service = build_service(settings.model_copy(update={"admin_token": "", "query_token": ""}))
    with TestClient(create_app(service)) as client:
        assert client.get("/admin/status").status_code == 200


def test_features_health_says_ready_or_not_and_nothing_else(features, caplog):
    assert features.get("/health").json() == {"status": "ok", "ready": True}
    s = features.settings
    with sqlite3.connect(s.sqlite_file) as db:  # the store loses its table: reads now fail
        for (table,) in db.execute("select name from sqlite_master where type = 'table'").fetchall():
            if table.endswith("user_stream"):
                db.execute(f'drop table "{table}"')
    with caplog.at_level(logging.WARNING, logger="features.service"):
        r = features.get("/health")
    assert r.status_code == 503 and r.json() == {"status": "unavailable", "ready": False}
    assert "user_stream" in caplog.text  # the reason is in the log, not in the answer
    r = features.get("/online-features/user_stream/u1", headers=bearer(FEATURES_TOKEN))
    assert r.status_code == 503 and r.json() == {"detail": "online store unavailable"}


# --- ids on the fast path ------------------------------------------------------------------------

def test_the_fast_path_decodes_an_id_once(features):
    """Over a real server (uvicorn decodes the path once, as ASGI says; Starlette's test client
    decodes it twice itself, so it cannot show this): ``u%2541`` is the id ``u%41``, not ``uA``."""
    import http.client
    import json

    from features.service import create_service
    from tests.support.index_rigs import running_server

    with running_server(create_service(features.settings)) as url:
        conn = http.client.HTTPConnection(url.split("//")[1])
        answers = {}
        for raw in ("uA", "u%41", "u%2541"):
            conn.request("GET", f"/online-features/user_stream/{raw}", headers=bearer(FEATURES_TOKEN))
            resp = conn.getresponse()
            assert resp.status == 200
            answers[raw] = json.loads(resp.read())["results"][0]
        conn.close()
    assert answers["uA"]["event_ts"] == T and answers["u%41"]["entity_id"] == "uA"
    assert answers["u%2541"]["entity_id"] == "u%41" and answers["u%2541"]["event_ts"] is None


# --- 500 bodies -----------------------------------------------------------------------------------

class ExplodingFeatures:
    def get(self, user_id):
        raise RuntimeError("secret detail /var/lib/convcg/private.db")


def test_an_internal_error_gets_a_generic_500_and_the_details_go_to_the_log(world, caplog):
    settings, version = world
    service = build_service(settings, feature_source=ExplodingFeatures())
    assert service.loader.load(version).ok
    with TestClient(create_app(service), raise_server_exceptions=False) as client, \
            caplog.at_level(logging.ERROR, logger="retrieval.service"):
        r = client.get("/retrieve", params={"user_id": "u1", "k": 3}, headers=bearer(QUERY))
    assert r.status_code == 500
    body = r.json()
    assert set(body) == {"error", "request_id"} and body["error"] == "internal error"
    assert "secret" not in r.text and "private.db" not in r.text
    assert body["request_id"] in caplog.text and "private.db" in caplog.text

    # anything a route lets through: the shared handler answers the same way
    app = FastAPI()
    log = logging.getLogger("convcg.test.guards")

    @app.get("/boom")
    def boom():
        raise ValueError("token=abc123 at /etc/convcg")

    install_http_guards(app, LIMIT, log)
    with TestClient(app, raise_server_exceptions=False) as client, caplog.at_level(logging.ERROR, logger=log.name):
        r = client.get("/boom")
    assert r.status_code == 500 and r.json()["detail"] == "internal error"
    assert "abc123" not in r.text and r.json()["request_id"] in caplog.text and "abc123" in caplog.text


# --- secrets --------------------------------------------------------------------------------------

def test_token_settings_never_show_in_repr_or_dumps(world):
    from index_refresher.settings import RefresherSettings
    from retrieval.settings import RetrievalSettings

    shown = [repr(world[0]), str(world[0].model_dump()), repr(RetrievalSettings(features_token="f-secret")),
             str(RetrievalSettings(features_token="f-secret").model_dump()),
             repr(FeaturesSettings(api_token="api-secret")), str(FeaturesSettings(api_token="api-secret").model_dump()),
             repr(RefresherSettings(admin_token="r-secret"))]
    for text in shown:
        for token in (ADMIN, QUERY, "f-secret", "api-secret", "r-secret"):
            assert token not in text


# --- metrics ports --------------------------------------------------------------------------------

def metrics_server_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in ("tests", ".venv", ".cache"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "start_http_server":
                calls.append((str(path.relative_to(ROOT)), node))
    return calls


def test_every_metrics_port_binds_a_configured_host_that_defaults_to_loopback():
    from convcg.http_auth import is_loopback
    from streams.settings import StreamSettings
    from training.config import TrainingSettings

    calls = metrics_server_calls()
    assert {p for p, _ in calls} >= {"streams/label_join/faust/app.py", "streams/aggregates/worker.py",
                                     "training/trainer/service.py",
                                     "features/cli.py"}
    for path, call in calls:
        addr = [k for k in call.keywords if k.arg == "addr"]
        assert addr and ast.unparse(addr[0].value).endswith("metrics_host"), f"{path}: {ast.unparse(call)}"
    for cls in (StreamSettings, TrainingSettings, FeaturesSettings):
        assert is_loopback(cls().metrics_host), cls


def test_the_sink_metrics_port_listens_on_loopback_only(tmp_path, broker):
    """The features sink's command, run for real: its /metrics answers on 127.0.0.1 and its
    socket is bound there, not to the wildcard address."""
    import os
    import subprocess
    import sys
    import time
    import urllib.request

    from convcg.kafka.broker import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVCG_")}
    env.update(PYTHONPATH=str(ROOT), CONVCG_FEATURES_REPO_DIR=str(tmp_path / "feast"),
               CONVCG_FEATURES_LABELS_DIR=str(tmp_path / "labels"))
    proc = subprocess.Popen([sys.executable, "-m", "loop.cli", "features", "sink", "--bootstrap", broker.bootstrap,
                             "--metrics-port", str(port)], cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    assert r.status == 200
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "the sink's /metrics never answered"
                time.sleep(0.2)
        listening = Path("/proc/net/tcp").read_text().splitlines()[1:]
        local = [line.split()[1] for line in listening if line.split()[3] == "0A"]  # LISTEN
        ours = [a for a in local if int(a.split(":")[1], 16) == port]
        assert ours == ["0100007F:" + f"{port:04X}"], ours  # 127.0.0.1, not 0.0.0.0
    finally:
        proc.terminate()
        proc.wait(30)


# --- failing lookups do not flood the log ---------------------------------------------------------

def test_failing_feature_lookups_log_once_per_interval_with_a_count(world, caplog):
    from convcg.kafka.broker import free_port
    from convcg.metrics_scrape import metric_sum, parse_samples

    settings, version = world
    dead = settings.model_copy(update={"features_url": f"http://127.0.0.1:{free_port()}"})  # nobody listens
    service = build_service(dead)
    assert service.loader.load(version).ok
    with TestClient(create_app(service)) as client, \
            caplog.at_level(logging.WARNING, logger="retrieval.user_features"):
        for _ in range(20):
            assert client.get("/retrieve", params={"user_id": "u1", "k": 3}, headers=bearer(QUERY)).status_code == 200
        samples = parse_samples(client.get("/metrics").text)
    lines = [r for r in caplog.records if r.name == "retrieval.user_features"]
    assert len(lines) == 1 and "1 time(s)" in lines[0].getMessage()  # the first; the next 19 wait for the interval
    assert metric_sum(samples, "convcg_retrieval_feature_lookup_failures_total") == 20
