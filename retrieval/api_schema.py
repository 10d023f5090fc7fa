"""The OpenAPI description of the retrieval service's requests (pure data).

The handlers read raw bytes and validate with :mod:`retrieval.validation` (no FastAPI model
validation on the query path), so the parameters and bodies they accept are declared here, as
each route's ``openapi_extra``: what ``/openapi.json`` publishes and what the schema-driven fuzz
tests generate requests from.
"""

from __future__ import annotations

from typing import Any

from convcg.contract import SURFACES
from retrieval.validation import MAX_ADD_ITEMS, MAX_RECENT_ITEMS

ADMIN_SCHEME = "adminToken"
QUERY_SCHEME = "queryToken"

ERROR_BODY = {"type": "object", "required": ["error"],
              "properties": {"error": {"type": "string", "minLength": 1}}}


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _responses(*codes: int) -> dict[str, Any]:
    meaning = {400: "bad request", 413: "request body too large", 401: "missing or wrong bearer token", 409: "refused (conflict)",
               503: "no index loaded yet"}
    return {str(c): {"description": meaning[c], "content": {"application/json": {"schema": ERROR_BODY}}}
            for c in codes}


AS_OF = ("query time, event-time seconds (default: the service's clock); the user's stored "
         "engagement sequence is read as of it (engagements strictly before, ages from it)")


def retrieve_get(default_k: int, max_k: int, secured: bool) -> dict[str, Any]:
    return {
        "parameters": [
            {"name": "user_id", "in": "query", "required": True, "schema": {"type": "string", "minLength": 1}},
            {"name": "surface", "in": "query", "required": False,
             "schema": {"type": "string", "enum": list(SURFACES), "default": "home"}},
            {"name": "k", "in": "query", "required": False,
             "schema": {"type": "integer", "minimum": 1, "maximum": max_k, "default": default_k}},
            {"name": "recent_items", "in": "query", "required": False,
             "description": f"comma-separated item ids, newest first (at most {MAX_RECENT_ITEMS})",
             "schema": {"type": "string"}},
            {"name": "as_of", "in": "query", "required": False, "description": AS_OF,
             "schema": {"type": "number", "minimum": 0}},
        ],
        "responses": _responses(400, 401, 503),
        **({"security": [{QUERY_SCHEME: []}]} if secured else {}),
    }


def retrieve_post(default_k: int, max_k: int, secured: bool) -> dict[str, Any]:
    body = {"type": "object", "required": ["user_id"], "additionalProperties": False, "properties": {
        "user_id": {"type": "string", "minLength": 1},
        "surface": {"type": "string", "enum": list(SURFACES), "default": "home"},
        "k": {"type": "integer", "minimum": 1, "maximum": max_k, "default": default_k},
        "recent_items": {"type": "array", "items": {"type": "string"}, "maxItems": MAX_RECENT_ITEMS},
        "as_of": {"type": "number", "minimum": 0, "description": AS_OF},
    }}
    return {"requestBody": _json_body(body), "responses": _responses(400, 401, 503),
            **({"security": [{QUERY_SCHEME: []}]} if secured else {})}


def admin_load() -> dict[str, Any]:
    name = {"type": ["string", "null"], "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"}
    body = {"type": "object", "additionalProperties": False, "properties": {
        "model_version": {**name, "description": "default: the registry's current version"},
        "index_version": {**name, "description": "default: the newest artifact of the model version"},
        "wait": {"type": "boolean", "default": True},
        "timeout_s": {"type": "number", "minimum": 0, "description": "longest wait for the load"},
    }}
    return {"requestBody": _json_body(body), "responses": _responses(400, 401, 409),
            "security": [{ADMIN_SCHEME: []}]}


def admin_items() -> dict[str, Any]:
    item = {"type": "object", "required": ["item_id", "advertiser_id"], "properties": {
        "item_id": {"type": "string", "minLength": 1},
        "advertiser_id": {"type": "string", "minLength": 1},
        "category": {"type": "string"},
        "price": {"type": "number"},
    }}
    body = {"type": "object", "required": ["items"], "properties": {
        "items": {"type": "array", "items": item, "maxItems": MAX_ADD_ITEMS}}}
    return {"requestBody": _json_body(body), "responses": _responses(400, 401, 503),
            "security": [{ADMIN_SCHEME: []}]}


def admin_status() -> dict[str, Any]:
    return {"responses": _responses(401), "security": [{ADMIN_SCHEME: []}]}


def admin_rollback() -> dict[str, Any]:
    return {"responses": _responses(401, 409), "security": [{ADMIN_SCHEME: []}]}


def security_schemes() -> dict[str, Any]:
    bearer = {"type": "http", "scheme": "bearer"}
    return {ADMIN_SCHEME: {**bearer, "description": "CONVCG_INDEX_ADMIN_TOKEN"},
            QUERY_SCHEME: {**bearer, "description": "CONVCG_INDEX_QUERY_TOKEN (when set)"}}
