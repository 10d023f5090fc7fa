"""Bearer tokens on the retrieval service (admin calls, queries) and the bind rule of both HTTP
services, over real tiny models and real FAISS; the refresher and `convcg index` send the token."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient

from convcg.http_auth import (
    UnsafeBind,
    authorized,
    check_bind,
    expected_header,
    is_loopback,
)
from index_refresher.refresher import (
    AdminError,
    RegistryRefresher,
    RetrievalAdminClient,
)
from registry.serving_model import registry_model_loader
from registry.store import ModelRegistry
from retrieval.service import build_service, create_app
from tests.support.index_rigs import running_server, tiny_registry

ROOT = Path(__file__).resolve().parents[3]
ADMIN = "admin-secret-token"
QUERY = "query-secret-token"
ITEM = {"item_id": "auth-new-item", "advertiser_id": "a1"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, _, paths = tiny_registry(tmp_path_factory.mktemp("auth"), n_items=200,
                                       admin_token=ADMIN, query_token=QUERY)
    return settings, [p.parent.name for p in paths]


@pytest.fixture
def client(world):
    settings, (v1, _) = world
    service = build_service(settings)
    service.loader.load(v1)
    with TestClient(create_app(service)) as c:
        c.service = service
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN_CALLS = {
    "/admin/load": lambda world: {"model_version": world[1][1]},
    "/admin/rollback": lambda world: None,
    "/admin/items": lambda world: {"items": [ITEM]},
}


@pytest.mark.parametrize("path", sorted(ADMIN_CALLS))
@pytest.mark.parametrize("headers", [{}, bearer("wrong"), bearer(QUERY), {"Authorization": ADMIN},
                                     {"Authorization": f"Basic {ADMIN}"}],
                         ids=["no-token", "wrong-token", "query-token", "no-scheme", "basic-scheme"])
def test_admin_calls_without_the_admin_token_are_401_and_change_nothing(client, world, path, headers):
    before = client.service.state.current
    r = client.post(path, json=ADMIN_CALLS[path](world), headers=headers)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert client.service.state.current is before and client.service.state.current.size == 200


def test_admin_calls_with_the_admin_token_do_their_work(client, world):
    _, (v1, v2) = world
    r = client.post("/admin/load", json={"model_version": v2}, headers=bearer(ADMIN))
    assert r.status_code == 200 and client.service.state.current.model_version == v2
    r = client.post("/admin/items", json={"items": [ITEM]}, headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["added"] == 1 and client.service.state.current.size == 201
    r = client.post("/admin/rollback", headers=bearer(ADMIN))
    assert r.status_code == 200 and client.service.state.current.model_version == v1


@pytest.mark.parametrize("headers", [{}, bearer("wrong"), bearer(ADMIN)], ids=["no-token", "wrong-token", "admin-token"])
def test_queries_without_the_query_token_are_401(client, headers):
    r = client.get("/retrieve", params={"user_id": "u1", "k": 3}, headers=headers)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    r = client.post("/retrieve", json={"user_id": "u1", "k": 3}, headers=headers)
    assert r.status_code == 401 and "bearer token" in r.json()["error"]
    metrics = client.get("/metrics").text
    assert 'convcg_retrieval_queries_total{outcome="unauthorized"} 2.0' in metrics


def test_queries_with_the_query_token_are_answered(client, world):
    r = client.get("/retrieve", params={"user_id": "u1", "k": 3}, headers=bearer(QUERY))
    assert r.status_code == 200 and len(r.json()["items"]) == 3 and r.json()["model_version"] == world[1][0]
    r = client.post("/retrieve", json={"user_id": "u1", "k": 3}, headers=bearer(QUERY))
    assert r.status_code == 200 and len(r.json()["items"]) == 3


def test_health_and_metrics_stay_open_and_status_needs_the_admin_token(client):
    for path in ("/health", "/metrics"):
        assert client.get(path).status_code == 200, path
    assert client.get("/admin/status").status_code == 401
    assert client.get("/admin/status", headers=bearer(ADMIN)).status_code == 200


def test_openapi_declares_the_bearer_schemes(client):
    schema = client.get("/openapi.json").json()
    assert set(schema["components"]["securitySchemes"]) == {"adminToken", "queryToken"}
    assert schema["paths"]["/admin/load"]["post"]["security"] == [{"adminToken": []}]
    assert schema["paths"]["/retrieve"]["get"]["security"] == [{"queryToken": []}]
    assert schema["paths"]["/retrieve"]["post"]["requestBody"]["content"]["application/json"]["schema"][
        "required"] == ["user_id"]


def test_the_refresher_and_the_index_commands_send_the_admin_token(world):
    from loop.cli import main

    settings, (v1, v2) = world
    service = build_service(settings)
    service.loader.load(v1)
    registry = ModelRegistry(settings.registry_root)
    with running_server(create_app(service)) as url:
        with pytest.raises(AdminError, match="401.*CONVCG_INDEX_ADMIN_TOKEN"):
            RetrievalAdminClient(url).rollback()  # no token: refused, with the setting to fix it
        configured = settings.model_copy(update={"retrieval_url": url})
        refresher = RegistryRefresher(configured, registry_model_loader(settings.registry_root),
                                      registry.current_version, RetrievalAdminClient.from_settings(configured),
                                      progress=False)
        assert refresher.refresh_once() == v2 == service.state.current.model_version
        runner = CliRunner()
        refused = runner.invoke(main, ["index", "rollback", "--url", url], env={"CONVCG_INDEX_ADMIN_TOKEN": ""})
        assert refused.exit_code != 0 and "401" in refused.output
        assert service.state.current.model_version == v2
        done = runner.invoke(main, ["index", "rollback", "--url", url], env={"CONVCG_INDEX_ADMIN_TOKEN": ADMIN})
        assert done.exit_code == 0, done.output
        assert service.state.current.model_version == v1
        done = runner.invoke(main, ["index", "load", "--url", url, "--model-version", v2],
                             env={"CONVCG_INDEX_ADMIN_TOKEN": ADMIN,
                                  "CONVCG_INDEX_REGISTRY_ROOT": str(settings.registry_root)})
        assert done.exit_code == 0, done.output
        assert service.state.current.model_version == v2


# --- the shared helper and the bind rule --------------------------------------------------------

def test_token_comparison_and_loopback_rule():
    expected = expected_header("s3cret")
    assert authorized("Bearer s3cret", expected) and authorized(b"Bearer s3cret", expected)
    for wrong in (None, "", "Bearer s3cre", "Bearer s3cret ", "bearer s3cret", "Bearer s3crét", b"\xff"):
        assert not authorized(wrong, expected), wrong
    assert expected_header("") is None and expected_header(None) is None
    assert authorized(None, None)  # no token set: open
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host), host
    for host in ("0.0.0.0", "::", "10.0.0.5", "192.168.1.1", "retrieval", "example.com"):
        assert not is_loopback(host), host
    with pytest.raises(UnsafeBind, match="CONVCG_INDEX_ADMIN_TOKEN"):
        check_bind("0.0.0.0", "", service="retrieval service", token_setting="CONVCG_INDEX_ADMIN_TOKEN")
    check_bind("0.0.0.0", "t", service="retrieval service", token_setting="CONVCG_INDEX_ADMIN_TOKEN")
    check_bind("127.0.0.1", "", service="retrieval service", token_setting="CONVCG_INDEX_ADMIN_TOKEN")


@pytest.mark.parametrize("command,token_var", [
    (["retrieval", "serve", "--no-load"], "CONVCG_INDEX_ADMIN_TOKEN"),
    (["features", "serve"], "CONVCG_FEATURES_API_TOKEN"),
])
def test_an_open_service_refuses_to_bind_beyond_loopback(tmp_path, command, token_var):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONVCG_")}
    proc = subprocess.run([sys.executable, "-m", "loop.cli", *command, "--host", "0.0.0.0", "--port", "1"],
                          cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "refusing to start" in proc.stderr and token_var in proc.stderr and "0.0.0.0" in proc.stderr


def test_admin_load_bounds_its_wait_and_names_its_fields(client, world):
    """A wait of 1e308 s once overflowed the future's timeout (a 500); now it is capped."""
    _, (_, v2) = world
    r = client.post("/admin/load", json={"model_version": v2, "timeout_s": 1e308}, headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["model_version"] == v2
    for body, message in (({"timeout_s": -1}, "timeout_s"), ({"timeout_s": "soon"}, "timeout_s"),
                          ({"wait": "yes"}, "wait"), ({"model": v2}, "unknown field")):
        r = client.post("/admin/load", json=body, headers=bearer(ADMIN))
        assert r.status_code == 400 and message in r.json()["error"], (body, r.text)
    assert client.service.state.current.model_version == v2
