"""The retrieval HTTP service: ``/retrieve``, ``/health``, ``/metrics`` and ``/admin/*``.

Query path: read the serving pair once, embed the query with that pair's model, search that
pair's index. Admin loads run in a background thread (``PairLoader``); the handler only waits
for the result when asked to (``wait``), never holding anything the query path needs.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

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

log = logging.getLogger("convcg.index.service")

DEFAULT_ADMIN_WAIT_S = 600.0


def json_response(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error(status: int, message: str, **extra: Any) -> Response:
    return json_response({"error": message, **extra}, status)


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

    def retrieve(self, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        req = parse_retrieve(data, self.default_k, self.max_k)
        pair = self.state.current  # one read: this query uses this pair only
        if pair is None:
            raise NoServingPair("no index loaded yet")
        query = req.query(self.feature_source.get(req.user_id))
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
        log.info("released old serving pair %s/%s", model_version, index_version)

    return ServingState(on_change=on_change, on_release=on_release)


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
    app.state.service = service
    metrics = service.metrics

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
        except Exception as exc:  # noqa: BLE001 - a query error must say what happened
            metrics.queries.labels("error").inc()
            log.exception("retrieval query failed")
            return error(500, f"retrieval failed: {exc}")
        metrics.queries.labels("ok").inc()
        metrics.query_latency.observe(time.perf_counter() - started)
        return json_response(body, status)

    async def answer_async(data: Any) -> Response:
        if service.inline_queries:  # no thread hop: lowest latency when searches are short
            return answer(data)
        return await run_in_threadpool(answer, data)

    @app.get("/retrieve")
    async def retrieve_get(request: Request) -> Response:
        return await answer_async(dict(request.query_params))

    @app.post("/retrieve")
    async def retrieve_post(request: Request) -> Response:
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

    @app.get("/admin/status")
    def status() -> Response:
        last = service.loader.last
        return json_response({"serving": pair_summary(service.state.current),
                              "previous": pair_summary(service.state.previous),
                              "last_load": last.to_dict() if last else None})

    @app.post("/admin/load")
    async def load(request: Request) -> Response:
        try:
            data = await read_json(request, default={})
        except BadRequest as exc:
            return error(400, str(exc))
        return await run_in_threadpool(load_sync, data)

    def load_sync(data: Any) -> Response:
        if not isinstance(data, dict):
            return error(400, "request body must be a JSON object")
        model_version, index_version = data.get("model_version"), data.get("index_version")
        for name, value in (("model_version", model_version), ("index_version", index_version)):
            if value is not None and (not isinstance(value, str) or not value or "/" in value or value.startswith(".")):
                return error(400, f"{name} must be a plain version name")
        try:
            future = service.loader.load_in_background(model_version, index_version)
        except LoaderBusy as exc:
            return error(409, str(exc))
        if not data.get("wait", True):
            return json_response({"status": "loading", "model_version": model_version,
                                  "index_version": index_version}, 202)
        try:
            result = future.result(timeout=float(data.get("timeout_s", DEFAULT_ADMIN_WAIT_S)))
        except (TypeError, ValueError):
            return error(400, "timeout_s must be a number (the load continues in the background)")
        except FutureTimeout:
            return json_response({"status": "loading", "model_version": model_version,
                                  "index_version": index_version}, 202)
        if not result.ok:
            return error(409, result.error, reason=result.reason,
                         serving=pair_summary(service.state.current))
        return json_response({"status": "serving", **result.to_dict()})

    @app.post("/admin/rollback")
    def rollback() -> Response:
        try:
            pair = service.state.rollback()
        except NoServingPair as exc:
            return error(409, str(exc))
        return json_response({"status": "serving", "serving": pair_summary(pair),
                              "previous": pair_summary(service.state.previous)})

    @app.post("/admin/items")
    async def add_items(request: Request) -> Response:
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

    return app


def build_service(settings, model_loader=None, feature_source: UserFeatureSource | None = None,
                  metrics: RetrievalMetrics | None = None) -> RetrievalService:
    """Wire a service from settings (registry-backed model loader by default)."""
    from registry.item_tower import registry_model_loader
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
                            inline_queries=settings.inline_queries)
