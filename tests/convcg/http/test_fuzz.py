"""Both HTTP APIs fuzzed against their own OpenAPI schema with schemathesis, bounded.

Each operation of the retrieval service (real tiny models, real FAISS, a pair loaded, both
tokens set and sent) and of the features lookup service (a real Feast SQLite online store) gets
schema-valid and schema-violating requests (schemathesis' positive and negative generation
modes, each a hypothesis strategy per operation). Target: no response with a 5xx status, no
crash (an exception out of the app fails the test), every 4xx carries a message. Examples are
derandomized, so a run is reproducible and its figures are the README's (`pytest -s` prints
them).
"""

from __future__ import annotations

import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode

from features.repo.definitions import VIEW_ENTITY
from features.settings import FeaturesSettings
from features.sink.worker import Batch, FeastWriter
from retrieval.service import build_service, create_app
from tests.support.feature_samples import full_update
from tests.support.fuzz_tally import FuzzTally
from tests.support.index_rigs import tiny_registry

MAX_EXAMPLES = 60  # per operation and generation mode
FUZZ = settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
ADMIN, QUERY, FEATURES_TOKEN = "fuzz-admin", "fuzz-query", "fuzz-features"
T = 1_700_000_000.0
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
RETRIEVAL_OPERATIONS = [("GET", "/retrieve"), ("POST", "/retrieve"), ("POST", "/admin/load"),
                        ("POST", "/admin/items"), ("POST", "/admin/rollback"), ("GET", "/admin/status"),
                        ("GET", "/health"), ("GET", "/metrics")]
FEATURES_OPERATIONS = [("POST", "/online-features"), ("GET", "/online-features/{view}/{entity_id}"),
                       ("GET", "/health"), ("GET", "/metrics")]
#: operations with no parameters and no body: nothing for the negative mode to violate
NO_INPUTS = {("GET", "/health"), ("GET", "/metrics"), ("GET", "/admin/status"), ("POST", "/admin/rollback")}
TALLIES = {"retrieval": FuzzTally("http: retrieval"), "features": FuzzTally("http: features")}


@pytest.fixture(scope="module")
def retrieval_schema(tmp_path_factory):
    settings_, _, paths = tiny_registry(tmp_path_factory.mktemp("fuzz-retrieval"), n_items=120, versions=1,
                                        admin_token=ADMIN, query_token=QUERY)
    service = build_service(settings_)
    assert service.loader.load(paths[0].parent.name).ok
    yield schemathesis.openapi.from_asgi("/openapi.json", create_app(service))
    print(TALLIES["retrieval"].line())


@pytest.fixture(scope="module")
def features_schema(tmp_path_factory):
    from features.service import create_service

    base = tmp_path_factory.mktemp("fuzz-features")
    s = FeaturesSettings(repo_dir=base / "feast", labels_dir=base / "labels", online_store="sqlite",
                         project=f"f{uuid.uuid4().hex[:10]}", api_token=FEATURES_TOKEN)
    FeastWriter(s).write_online(Batch(updates=[full_update("user", f"u{i}", T + i, i) for i in range(5)]
                                      + [full_update("item", "i1", T, 42)]))
    yield schemathesis.openapi.from_asgi("/openapi.json", create_service(s))
    print(TALLIES["features"].line())


def operations(schema) -> set[tuple[str, str]]:
    return {(op.method.upper(), op.path) for op in (r.ok() for r in schema.get_all_operations())}


def real_view(case, view: str | None) -> None:
    """Half the features cases name a feature view the store has (random names are all 404s)."""
    if view is None:
        return
    if "view" in (case.path_parameters or {}):
        case.path_parameters["view"] = view
    elif isinstance(case.body, dict) and "feature_view" in case.body:
        case.body["feature_view"] = view


def fuzz_operation(schema, method: str, path: str, mode: GenerationMode, token: str, tally: FuzzTally,
                   message_field: str, views: list[str] | None = None) -> None:
    operation = schema[path][method]
    answered = 0

    @FUZZ
    @given(operation.as_strategy(generation_mode=mode), st.sampled_from([None, *(views or [])]))
    def fuzz(case, view):
        nonlocal answered
        real_view(case, view)
        response = case.call(headers={"Authorization": f"Bearer {token}"})
        answered += 1
        tally.add(str(response.status_code))
        label = f"{method} {path} ({mode.value})"
        assert response.status_code < 500, f"{label}: {response.status_code} {response.text[:500]}"
        if 400 <= response.status_code < 500:
            body = response.json()
            assert isinstance(body, dict), f"{label}: {response.status_code} without a JSON object body"
            message = body.get(message_field) or body.get("detail")
            assert isinstance(message, str) and message.strip(), f"{label}: {response.status_code} {body}"

    fuzz()
    assert answered > 0


def test_every_retrieval_and_features_operation_is_fuzzed(retrieval_schema, features_schema):
    assert operations(retrieval_schema) == set(RETRIEVAL_OPERATIONS)
    assert operations(features_schema) == set(FEATURES_OPERATIONS)


def cases(operations_list):
    return [pytest.param(m, p, mode, id=f"{m} {p} {mode.value}") for m, p in operations_list for mode in MODES
            if mode is GenerationMode.POSITIVE or (m, p) not in NO_INPUTS]


@pytest.mark.parametrize("method,path,mode", cases(RETRIEVAL_OPERATIONS))
def test_retrieval_api_has_no_5xx_and_every_4xx_says_why(retrieval_schema, method, path, mode):
    token = ADMIN if path.startswith("/admin/") else QUERY
    fuzz_operation(retrieval_schema, method, path, mode, token, TALLIES["retrieval"], "error")


@pytest.mark.parametrize("method,path,mode", cases(FEATURES_OPERATIONS))
def test_features_api_has_no_5xx_and_every_4xx_says_why(features_schema, method, path, mode):
    fuzz_operation(features_schema, method, path, mode, FEATURES_TOKEN, TALLIES["features"], "detail",
                   views=sorted(VIEW_ENTITY))
