"""The retrieval HTTP service: ``/retrieve``, ``/health``, ``/metrics`` and ``/admin/*``.

Query path: read the serving pair once, embed the query with that pair's model, search that
pair's index. Admin loads run in a background thread (``PairLoader``); the handler only waits
for the result when asked to (``wait``), never holding anything the query path needs.

With ``admin_token`` set, ``/admin/status``, ``/admin/load``, ``/admin/rollback`` and
``/admin/items`` answer only requests bearing it (``convcg.http_auth``); ``query_token`` does the same for ``/retrieve``.
Every request body is bounded (``max_body_bytes``: 413) and a token is checked before its body
is read; a 500 carries only a request id (the details are logged with it).
Parameters and bodies are read raw (no FastAPI validation on the query path) and described
for ``/openapi.json`` by ``retrieval.api_schema``.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any, Callable

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from convcg.http_auth import (
    DEFAULT_MAX_BODY_BYTES,
    UNAUTHORIZED_MESSAGE,
    WWW_AUTHENTICATE,
    authorized,
    expected_header,
    install_http_guards,
    internal_error,
    secret,
)
from registry.containment import OutsideRoot, check_version_name
from retrieval import api_schema
from retrieval.loader import LoaderBusy, PairLoader
from retrieval.metrics import RetrievalMetrics
from retrieval.serving import (
    NoServingPair,
    ServingPair,
    ServingState,
    configure_search_threads,
)
from retrieval.user_features import NoUserFeatures, UserFeatureSource
from retrieval.validation import BadRequest, parse_new_items, parse_retrieve

log = logging.getLogger(__name__)

DEFAULT_ADMIN_WAIT_S = 600.0


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


def unauthorized() -> Response:
    response = error(401, UNAUTHORIZED_MESSAGE)
    response.headers[WWW_AUTHENTICATE[0]] = WWW_AUTHENTICATE[1]
    return response


def wait_timeout(data: dict[str, Any]) -> float:
    """The ``timeout_s`` of an admin load: a finite number >= 0, at most DEFAULT_ADMIN_WAIT_S."""
    raw = data.get("timeout_s", DEFAULT_ADMIN_WAIT_S)
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw) or raw < 0:
        raise BadRequest(f"timeout_s must be a finite number >= 0, got {raw!r}")
    return min(float(raw), DEFAULT_ADMIN_WAIT_S)


def pair_summary(pair: ServingPair | None) -> dict[str, Any] | None:
    if pair is None:
        return None
    return {"model_version": pair.model_version, "index_version": pair.index_version,
            "items": pair.size, "added_items": len(pair.delta), "kind": pair.artifact.manifest.get("kind"),
            "recall": pair.artifact.manifest.get("recall"), "loaded_at": pair.loaded_at}


@dataclass
class RetrievalService:
    """The parts the HTTP app is wired from (exposed for the CLI, tests and benches)."""

    state: ServingState
    loader: PairLoader
    metrics: RetrievalMetrics
    feature_source: UserFeatureSource
    default_k: int = 100
    max_k: int = 1000
    #: answer queries on the event loop itself (True) or in the worker thread pool (False)
    inline_queries: bool = False
    #: bearer tokens: admin calls (load, rollback, items) and queries; empty = open
    admin_token: str = ""
    query_token: str = ""
    #: request bodies larger than this are refused with 413 before they are read
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    #: the event-time clock a query without ``as_of`` is asked at (events are stamped in
    #: seconds since the epoch, so live traffic reads the wall clock)
    clock: Callable[[], float] = time.time

    def retrieve(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = parse_retrieve(data, self.default_k, self.max_k)
        pair = self.state.current  # one read: this query uses this pair only
        if pair is None:
            raise NoServingPair("no index loaded yet")
        started = time.perf_counter()
        features = self.feature_source.get(req.user_id)
        self.metrics.feature_lookup_latency.observe(time.perf_counter() - started)
        query = req.query(features, self.clock())
        vectors = pair.model.embed_queries([query])
        hits = pair.search(vectors, req.k)[0]
        self.metrics.served.labels(pair.model_version, pair.index_version).inc()
        return 200, {"user_id": req.user_id, "surface": req.surface, "k": req.k,
                     "model_version": pair.model_version, "index_version": pair.index_version,
                     "items": [{"item_id": i, "score": s} for i, s in hits]}


def metered_state(metrics: RetrievalMetrics) -> ServingState:
    """A ServingState whose swaps, adds and releases are reflected in ``metrics``."""

    def on_change(pair: ServingPair, kind: str) -> None:
        if kind != "add":
            metrics.swaps.labels(kind).inc()
        metrics.set_serving(pair.model_version, pair.index_version, pair.size)

    def on_release(model_version: str, index_version: str) -> None:
        metrics.released_pairs.inc()
        held = {(p.model_version, p.index_version) for p in (state.current, state.previous) if p is not None}
        if (model_version, index_version) not in held:  # the same versions may have been loaded again
            metrics.forget(model_version, index_version)
        log.info("released old serving pair %s/%s", model_version, index_version)

    state = ServingState(on_change=on_change, on_release=on_release)
    return state


async def read_json(request: Request, default: Any = None) -> Any:
    body = await request.body()
    if not body:
        return default
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None


def create_app(service: RetrievalService) -> FastAPI:
    app = FastAPI(title="convcg retrieval", version="1")
    install_http_guards(app, service.max_body_bytes, log, error_field="error")
    app.state.service = service
    metrics = service.metrics
    admin_auth = expected_header(service.admin_token)
    query_auth = expected_header(service.query_token)
    k_range = (service.default_k, service.max_k)

    def admin_refused(request: Request) -> bool:
        return not authorized(request.headers.get("authorization"), admin_auth)

    def answer(data: Any) -> Response:
        started = time.perf_counter()
        try:
            status, body = service.retrieve(data)
        except BadRequest as exc:
            metrics.queries.labels("bad_request").inc()
            return error(400, str(exc))
        except NoServingPair as exc:
            metrics.queries.labels("unavailable").inc()
            return error(503, str(exc))
        except Exception:  # noqa: BLE001 - logged with the request id the client gets
            metrics.queries.labels("error").inc()
            return json_response(internal_error(log, "retrieval query failed", "error"), 500)
        metrics.queries.labels("ok").inc()
        metrics.query_latency.observe(time.perf_counter() - started)
        return json_response(body, status)

    async def answer_async(data: Any) -> Response:
        if service.inline_queries:  # no thread hop: lowest latency when searches are short
            return answer(data)
        return await run_in_threadpool(answer, data)

    def query_refused(request: Request) -> bool:
        if authorized(request.headers.get("authorization"), query_auth):
            return False
        metrics.queries.labels("unauthorized").inc()
        return True

    @app.get("/retrieve", openapi_extra=api_schema.retrieve_get(*k_range, query_auth is not None))
    async def retrieve_get(request: Request) -> Response:
        if query_auth is not None and query_refused(request):
            return unauthorized()
        return await answer_async(dict(request.query_params))

    @app.post("/retrieve", openapi_extra=api_schema.retrieve_post(*k_range, query_auth is not None))
    async def retrieve_post(request: Request) -> Response:
        if query_auth is not None and query_refused(request):
            return unauthorized()
        try:
            data = await read_json(request)
        except BadRequest as exc:
            metrics.queries.labels("bad_request").inc()
            return error(400, str(exc))
        return await answer_async(data)

    @app.get("/health")
    def health() -> Response:
        pair = service.state.current
        body = {"status": "ok" if pair else "no_index", "serving": pair_summary(pair)}
        return json_response(body, 200 if pair else 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/admin/status", openapi_extra=api_schema.admin_status())
    def status(request: Request) -> Response:
        if admin_refused(request):
            return unauthorized()
        last = service.loader.last
        return json_response({"serving": pair_summary(service.state.current),
                              "previous": pair_summary(service.state.previous),
                              "last_load": last.to_dict() if last else None})

    @app.post("/admin/load", openapi_extra=api_schema.admin_load())
    async def load(request: Request) -> Response:
        if admin_refused(request):
            return unauthorized()
        try:
            data = await read_json(request, default={})
        except BadRequest as exc:
            return error(400, str(exc))
        return await run_in_threadpool(load_sync, data)

    def load_sync(data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, "request body must be a JSON object")
        unknown = set(data) - {"model_version", "index_version", "wait", "timeout_s"}
        if unknown:
            return error(400, f"unknown field(s) {sorted(unknown)}; allowed: model_version, "
                              "index_version, wait, timeout_s")
        model_version, index_version = data.get("model_version"), data.get("index_version")
        try:
            for name, value in (("model_version", model_version), ("index_version", index_version)):
                if value is not None:
                    check_version_name(value, name)
            wait = data.get("wait", True)
            if not isinstance(wait, bool):
                raise BadRequest(f"wait must be true or false, got {wait!r}")
            timeout_s = wait_timeout(data)
        except (OutsideRoot, BadRequest) as exc:
            return error(400, str(exc))
        try:
            future = service.loader.load_in_background(model_version, index_version)
        except LoaderBusy as exc:
            return error(409, str(exc))
        if not wait:
            return json_response({"status": "loading", "model_version": model_version,
                                  "index_version": index_version}, 202)
        try:
            result = future.result(timeout=timeout_s)
        except FutureTimeout:
            return json_response({"status": "loading", "model_version": model_version,
                                  "index_version": index_version}, 202)
        if not result.ok:
            return error(409, result.error, reason=result.reason,
                         serving=pair_summary(service.state.current))
        return json_response({"status": "serving", **result.to_dict()})

    @app.post("/admin/rollback", openapi_extra=api_schema.admin_rollback())
    def rollback(request: Request) -> Response:
        if admin_refused(request):
            return unauthorized()
        try:
            pair = service.state.rollback()
        except NoServingPair as exc:
            return error(409, str(exc))
        return json_response({"status": "serving", "serving": pair_summary(pair),
                              "previous": pair_summary(service.state.previous)})

    @app.post("/admin/items", openapi_extra=api_schema.admin_items())
    async def add_items(request: Request) -> Response:
        if admin_refused(request):
            return unauthorized()
        try:
            rows = parse_new_items(await read_json(request))
        except BadRequest as exc:
            return error(400, str(exc))
        return await run_in_threadpool(add_items_sync, rows)

    def add_items_sync(rows: list[dict]) -> Response:
        try:
            pair, added = service.state.add_items(rows)
        except NoServingPair as exc:
            return error(503, str(exc))
        except ValueError as exc:
            return error(400, f"could not embed the items: {exc}")
        metrics.items_added.inc(added)
        return json_response({"added": added, "model_version": pair.model_version,
                              "index_version": pair.index_version, "items": pair.size})

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = api_schema.security_schemes()
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def build_service(settings, model_loader=None, feature_source: UserFeatureSource | None = None,
                  metrics: RetrievalMetrics | None = None) -> RetrievalService:
    """Wire a service from settings (registry-backed model loader by default)."""
    from registry.serving_model import registry_model_loader
    from retrieval.user_features import user_feature_source

    configure_search_threads(settings.search_threads)
    metrics = metrics or RetrievalMetrics()
    state = metered_state(metrics)
    loader = PairLoader(state, model_loader or registry_model_loader(settings.registry_root),
                        settings.index_root, metrics)
    if feature_source is None:
        feature_source = user_feature_source(settings, on_failure=metrics.feature_lookup_failures.inc)
    return RetrievalService(state=state, loader=loader, metrics=metrics,
                            feature_source=feature_source or NoUserFeatures(),
                            default_k=settings.default_k, max_k=settings.max_k,
                            inline_queries=settings.inline_queries,
                            admin_token=secret(settings.admin_token), query_token=secret(settings.query_token),
                            max_body_bytes=settings.max_body_bytes)
