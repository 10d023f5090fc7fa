"""Where the retrieval service gets a user's online features (the features component).

The default source calls the features HTTP service (``convcg features serve``:
``GET /online-features/user_stream/{user_id}``) when a URL is configured, and otherwise
returns no features. A failed or slow lookup never fails a query: the query is served without
features and the failure is counted. Feast is never imported here (the hot path).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Protocol

log = logging.getLogger("convcg.index.user_features")


class UserFeatureSource(Protocol):
    def get(self, user_id: str) -> dict[str, Any]:
        """Feature name -> value for ``user_id`` (``{}`` when unknown)."""
        ...


class NoUserFeatures:
    def get(self, user_id: str) -> dict[str, Any]:
        return {}


def features_from_response(body: Any) -> dict[str, Any]:
    """The feature dict of one entity from the features service's lookup response
    (``{"results": [{"features": {...}}]}``); missing values (``None``) are dropped."""
    if not isinstance(body, dict):
        return {}
    results = body.get("results")
    if isinstance(results, list) and results and isinstance(results[0], dict):
        features = results[0].get("features")
    else:
        features = body.get("features")
    if not isinstance(features, dict):
        return {}
    return {k: v for k, v in features.items() if v is not None}


class HttpUserFeatureSource:
    """``GET {base_url}{path}`` with ``{user_id}`` substituted (optional bearer token)."""

    def __init__(self, base_url: str, path: str = "/online-features/user_stream/{user_id}",
                 timeout_s: float = 0.05, token: str = "", on_failure: Callable[[], None] | None = None):
        import httpx

        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.path = path
        self.client = httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s, headers=headers)
        self.on_failure = on_failure

    def get(self, user_id: str) -> dict[str, Any]:
        from urllib.parse import quote

        try:
            resp = self.client.get(self.path.format(user_id=quote(user_id, safe="")))
            if resp.status_code == 404:
                return {}
            resp.raise_for_status()
            return features_from_response(resp.json())
        except Exception as exc:  # network, timeout, auth, bad JSON: serve without features
            if self.on_failure is not None:
                self.on_failure()
            log.warning("user feature lookup for %s failed (%s): serving without features", user_id, exc)
            return {}

    def close(self) -> None:
        self.client.close()


def user_feature_source(settings, on_failure: Callable[[], None] | None = None) -> UserFeatureSource:
    if not settings.features_url:
        return NoUserFeatures()
    return HttpUserFeatureSource(settings.features_url, settings.features_path, settings.features_timeout_s,
                                 settings.features_token, on_failure)
