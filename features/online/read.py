"""Fast online reads over Feast's online store.

Feast's SDK ``get_online_features`` resolves feature references against the registry, builds
request/response protos and runs on-demand transformations on every call; that bookkeeping costs
more than the store read itself (see bench/perf/features_online.py). ``OnlineReader`` resolves
the feature views once (refreshing them every ``registry_cache_ttl_seconds``) and calls the
configured Feast online store's ``online_read`` directly: the same store, keys and encoding as
the SDK, without the per-call registry and proto work.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from convcg.feast_online import read_online_rows
from features.repo.definitions import JOIN_KEYS, VIEW_ENTITY, view_features


class UnknownFeatureView(KeyError):
    def __str__(self) -> str:
        return f"unknown feature view {self.args[0]!r}; known views: {sorted(VIEW_ENTITY)}"


class UnknownFeature(KeyError):
    def __str__(self) -> str:
        view, names = self.args
        return f"unknown feature(s) {names} in view {view!r}; known: {sorted(view_features(view))}"


def resolve_features(view: str, features: list[str] | None) -> list[str]:
    """Requested feature names of ``view`` (all when None); raises on unknown view/feature."""
    if view not in VIEW_ENTITY:
        raise UnknownFeatureView(view)
    known = view_features(view)
    if not features:
        return list(known)
    unknown = [f for f in features if f not in known]
    if unknown:
        raise UnknownFeature(view, unknown)
    return list(features)


class OnlineReader:
    def __init__(self, store, refresh_seconds: float = 60.0):
        self.store = store
        self.refresh_seconds = refresh_seconds
        self._lock = threading.Lock()
        self._views: dict[str, Any] = {}
        self._loaded_at = 0.0
        self._online_store = store._get_provider().online_store
        self._refresh()

    def _refresh(self) -> None:
        self.store.refresh_registry()
        views = {fv.name: fv for fv in self.store.list_feature_views()}
        views.update({fv.name: fv for fv in self.store.list_stream_feature_views()})
        self._views, self._loaded_at = views, time.monotonic()

    def view(self, name: str):
        if time.monotonic() - self._loaded_at > self.refresh_seconds:
            with self._lock:
                if time.monotonic() - self._loaded_at > self.refresh_seconds:
                    self._refresh()
        try:
            return self._views[name]
        except KeyError:
            raise UnknownFeatureView(name) from None

    def read(self, view: str, entity_ids: list[str], features: list[str] | None = None
             ) -> list[dict[str, Any]]:
        """One dict per entity id, in order: ``entity_id``, ``event_ts`` (None when the store
        has nothing for it) and ``features`` (name -> value or None)."""
        names = resolve_features(view, features)
        return read_online_rows(self._online_store, self.store.config, self.view(view), JOIN_KEYS[VIEW_ENTITY[view]],
                                entity_ids, names)


def python_to_value(kind: str, v: Any, Value=None, StringList=None, DoubleList=None):
    """Encode one feature value as the ``ValueProto`` Feast's own push would store (pass the
    proto classes in hot loops to skip the import lookup)."""
    if Value is None or DoubleList is None:
        from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value
    if v is None:
        return Value()
    if kind == "floats":
        return Value(double_list_val=DoubleList(val=v))
    if kind == "int":
        return Value(int64_val=v)
    if kind == "float":
        return Value(double_val=v)
    if kind == "strings":
        return Value(string_list_val=StringList(val=v))
    return Value(string_val=v)


class OnlineWriter:
    """Writes ``FeatureUpdate`` rows straight into the configured Feast online store.

    ``FeatureStore.push`` turns each batch into a DataFrame, an Arrow table and back into
    protos, and looks the push source up in the registry on every call; profiling the sink
    showed that costing more than the store write. This builds the same ``(EntityKey, {name:
    Value}, event_time, created)`` rows Feast's push builds and hands them to the same
    ``online_write_batch`` of the same online store (Redis keeps its newest-event-time-wins
    check), with the stream feature views resolved once.
    """

    def __init__(self, store):
        from features.repo.definitions import stream_view_name

        self.store = store
        self._online_store = store._get_provider().online_store
        self._views = {e: store.get_stream_feature_view(stream_view_name(e)) for e in ("user", "item", "advertiser")}

    def write(self, entity: str, updates: list, created: datetime) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value

        from features.repo.definitions import stream_feature_schema
        from features.sink.updates import ts_to_datetime

        schema = list(stream_feature_schema(entity).items())
        join_key = JOIN_KEYS[entity]
        rows = [(EntityKey(join_keys=[join_key], entity_values=[Value(string_val=u.entity_id)]),
                 {n: python_to_value(k, u.features.get(n), Value, StringList, DoubleList) for n, k in schema},
                 ts_to_datetime(u.event_ts), created) for u in updates]
        self._online_store.online_write_batch(self.store.config, self._views[entity], rows, None)
