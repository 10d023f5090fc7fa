"""Where the retrieval service gets a user's online features (the features component).

The default source calls the features HTTP service (``convcg features serve``:
``GET /online-features/user_stream/{user_id}``) when a URL is configured, and otherwise
returns no features. ``features_source=store`` reads the user's row from the Feast online
store itself, in-process (the store the features sink writes, opened by its repo path; one
process hop less per query). A failed or slow lookup never fails a query: the query is served
without features and the failure is counted. Only the store source imports Feast, when the
service starts (~5 s, once); the HTTP source never does.
"""

from __future__ import annotations

import http.client
import logging
import threading
from typing import Any, Callable, Protocol
from urllib.parse import quote

import orjson

from convcg.feast_online import read_online_rows
from convcg.http_auth import secret
from convcg.rate_limited_log import RateLimitedLog

log = logging.getLogger(__name__)


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


class LookupFailed(Exception):
    """The features service answered something other than 200 / 404."""


class HttpUserFeatureSource:
    """``GET {base_url}{path}`` with ``{user_id}`` substituted (optional bearer token).

    One keep-alive ``http.client`` connection per calling thread (the service answers queries
    from a thread pool). On this hot path httpx cost ~2 ms of client-side Python per lookup,
    several times the features service's own answer (``bench.system.retrieval_online``); this costs
    ~0.1 ms. ``timeout_s`` bounds the connect and each socket read. A request that fails on a
    reused connection the server may have closed while idle is sent once more on a fresh one;
    a timeout is not retried (the query must not wait twice)."""

    def __init__(self, base_url: str, path: str = "/online-features/user_stream/{user_id}",
                 timeout_s: float = 0.05, token: str = "", on_failure: Callable[[], None] | None = None):
        from urllib.parse import urlsplit

        parts = urlsplit(base_url.rstrip("/"))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"features URL must be http(s)://host[:port][/prefix], got {base_url!r}")
        self.scheme, self.host = parts.scheme, parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.path = parts.path + path
        self.timeout_s = timeout_s
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.on_failure = on_failure
        self.failures = RateLimitedLog(log, "user feature lookups failed, queries served without features")
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            cls = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
            conn = self._local.conn = cls(self.host, self.port, timeout=self.timeout_s)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _request(self, url: str) -> tuple[int, bytes]:
        for attempt in (0, 1):
            reused = getattr(self._local, "conn", None) is not None
            conn = self._connection()
            try:
                conn.request("GET", url, headers=self.headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                self._drop_connection()
                if attempt or not reused:
                    raise
            except BaseException:
                self._drop_connection()
                raise
        raise AssertionError("unreachable")

    def get(self, user_id: str) -> dict[str, Any]:
        try:
            status, body = self._request(self.path.format(user_id=quote(user_id, safe="")))
            if status == 404:
                return {}
            if status != 200:
                raise LookupFailed(f"HTTP {status}: {body[:200]!r}")
            return features_from_response(orjson.loads(body))
        except Exception as exc:  # network, timeout, auth, bad JSON: serve without features
            if self.on_failure is not None:
                self.on_failure()
            self.failures.error(exc)
            return {}

    def close(self) -> None:
        self._drop_connection()


class OnlineStoreUserFeatureSource:
    """The user's row of a feature view read in-process from the Feast store at ``repo_path``
    (its ``feature_store.yaml``, written when the features component applies its repo), with
    Feast's own ``online_read`` and the decoding the features service uses
    (``convcg.feast_online``): the same values as over HTTP, without the hop.

    The store is opened, and the view resolved from its registry, at start (``warm``) or else on
    the next read, so the service may start before the features component has applied its
    repo; until then every read fails (counted) and queries go without features. A read that
    fails once the store is open (Redis down) keeps it open: the client reconnects by itself."""

    def __init__(self, repo_path, view: str = "user_stream", join_key: str = "user_id",
                 on_failure: Callable[[], None] | None = None):
        self.repo_path, self.view_name, self.join_key = repo_path, view, join_key
        self.on_failure = on_failure
        self.failures = RateLimitedLog(log, "user feature reads failed, queries served without features")
        self._lock = threading.Lock()
        self._opened: tuple | None = None  # (online store, repo config, feature view, names)

    def _open(self) -> tuple:
        opened = self._opened
        if opened is not None:
            return opened
        with self._lock:
            if self._opened is None:
                from feast import FeatureStore

                store = FeatureStore(repo_path=str(self.repo_path))
                views = {v.name: v for v in [*store.list_stream_feature_views(), *store.list_feature_views()]}
                if self.view_name not in views:
                    raise LookupFailed(f"no feature view {self.view_name!r} in the Feast registry at "
                                       f"{self.repo_path} (have {sorted(views)})")
                view = views[self.view_name]
                self._opened = (store._get_provider().online_store, store.config, view,
                                tuple(f.name for f in view.features))
                log.info("user features read in-process from the %s online store of Feast project %s (%s)",
                         store.config.online_store.type, store.config.project, self.repo_path)
            return self._opened

    def warm(self) -> bool:
        """Open the store now (at start-up, not on the first query); False if it cannot be yet."""
        try:
            self._open()
            return True
        except Exception as exc:  # noqa: BLE001 - retried on the first read
            log.warning("Feast store at %s not readable yet (%s: %s); retrying on the next query", self.repo_path,
                        type(exc).__name__, exc)
            return False

    def get(self, user_id: str) -> dict[str, Any]:
        try:
            online_store, config, view, names = self._open()
            row = read_online_rows(online_store, config, view, self.join_key, [user_id], names)[0]
        except Exception as exc:  # no repo yet, store down: serve without features
            if self.on_failure is not None:
                self.on_failure()
            self.failures.error(exc)
            return {}
        return {k: v for k, v in row["features"].items() if v is not None}


def user_feature_source(settings, on_failure: Callable[[], None] | None = None) -> UserFeatureSource:
    if settings.features_source == "store":
        source = OnlineStoreUserFeatureSource(settings.features_repo, settings.features_view,
                                              settings.features_join_key, on_failure)
        source.warm()
        return source
    if not settings.features_url:
        return NoUserFeatures()
    return HttpUserFeatureSource(settings.features_url, settings.features_path, settings.features_timeout_s,
                                 secret(settings.features_token), on_failure)
