"""Writing ``FeatureUpdate`` rows into Feast's online store, in Feast's own format, fast.

The sink writes ~9,000 entity rows a second at 5,000 raw events/s (each event touches a user,
an item and an advertiser). Feast's ``online_write_batch`` wants one ``ValueProto`` per feature
per row and then, per row, hashes every field name, converts the event time through a
``datetime`` and serialises each proto; profiling the sink showed ~60 µs per row, most of the
sink's CPU. Nothing of that depends on the row but the values, so the writers here:

- resolve, once per feature view, everything Feast derives from the view (Redis: the hash
  field of each feature, ``mmh3("<view>:<feature>")``, and the ``_ts:<view>`` field; SQLite:
  the table name and the upsert statement);
- keep the serialised entity key of recently written entities (Feast's ``_redis_key`` /
  ``serialize_entity_key``, called once per entity, not per write);
- keep the serialised ``ValueProto`` of values seen before (``ValueBytes``: counts and smoothed
  rates repeat a lot), made by the protobuf library, never by hand; a list feature (a user's
  engagement sequence: three lists in every user update, unchanged by the impressions that
  make most of them) is serialised again only when it differs from the entity's previous one
  (``ListBytes``, compared exactly: floats bit for bit);
- hand the store one ``HSET`` per row (Redis: packed by hiredis and sent in one write per
  batch on one connection of the client's pool, replies read after it, as redis-py's
  pipeline does at about half its cost per row) or one ``executemany`` (SQLite).

The bytes stored are exactly those Feast's ``online_write_batch`` stores for the same rows
(``tests/features/test_online_write.py`` writes the same updates both ways and compares the
stores byte for byte, then reads them back through the Feast SDK). Any other online store type
goes through Feast's ``online_write_batch`` unchanged (``features.online.read.OnlineWriter``).
"""

from __future__ import annotations

import struct
from datetime import datetime, timezone
from typing import Any

from features.repo.definitions import (
    JOIN_KEYS,
    LIST_KINDS,
    stream_feature_schema,
    stream_view_name,
)

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ENTITY_KEY_CACHE = 200_000  # serialised entity keys kept (cleared when full)
VALUE_CACHE = 100_000  # serialised values kept per kind (cleared when full)
LIST_CACHE = 300_000  # (entity, feature) -> previous list and its bytes (cleared when full)


class ValueBytes:
    """``ValueProto(...).SerializeToString()`` of one logical kind, memoised for scalars."""

    def __init__(self) -> None:
        from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value

        self._Value, self._StringList, self._DoubleList = Value, StringList, DoubleList
        self._ints: dict[int, bytes] = {}
        self._floats: dict[float, bytes] = {}
        self.empty = Value().SerializeToString()

    def encode(self, kind: str, v: Any) -> bytes:
        if v is None:
            return self.empty
        if kind == "int":
            b = self._ints.get(v)
            if b is None:
                b = self._remember(self._ints, v, self._Value(int64_val=v).SerializeToString())
            return b
        if kind == "float":
            b = self._floats.get(v)
            if b is None:
                b = self._Value(double_val=v).SerializeToString()
                if v:  # 0.0 == -0.0 as dict keys, but their bytes differ: never cache zero
                    self._remember(self._floats, v, b)
            return b
        if kind == "strings":
            return self._Value(string_list_val=self._StringList(val=v)).SerializeToString()
        if kind == "floats":
            return self._Value(double_list_val=self._DoubleList(val=v)).SerializeToString()
        return self._Value(string_val=v).SerializeToString()

    @staticmethod
    def _remember(cache: dict, v: Any, b: bytes) -> bytes:
        if len(cache) >= VALUE_CACHE:
            cache.clear()
        cache[v] = b
        return b


class ListBytes:
    """The serialised list value of one (entity, feature), made again only when the list
    differs from the one serialised for that key before. Strings compare as strings, floats by
    their IEEE bits (``0.0 == -0.0`` but their bytes differ)."""

    def __init__(self, values: ValueBytes, limit: int = LIST_CACHE) -> None:
        self._encode, self._limit = values.encode, limit
        self._last: dict[Any, tuple[Any, bytes]] = {}

    def encode(self, kind: str, key: Any, v: list | None) -> bytes:
        if v is None:
            return self._encode(kind, v)
        same = tuple(v) if kind == "strings" else struct.pack(f"{len(v)}d", *v)
        hit = self._last.get(key)
        if hit is not None and hit[0] == same:
            return hit[1]
        b = self._encode(kind, v)
        if len(self._last) >= self._limit:
            self._last.clear()
        self._last[key] = (same, b)
        return b


def _timestamp_parts(event_ts: float) -> tuple[int, int, datetime]:
    """(seconds, nanos, aware datetime) exactly as Feast derives them from the row's
    ``datetime`` (``datetime.fromtimestamp`` rounds to microseconds; ``Timestamp.FromDatetime``
    keeps whole seconds and microseconds * 1000)."""
    dt = datetime.fromtimestamp(event_ts, tz=timezone.utc)
    delta = dt - EPOCH
    return delta.days * 86_400 + delta.seconds, delta.microseconds * 1000, dt


class _EntityKeys:
    """Serialised entity keys of one join key, computed by ``encode`` once per entity id."""

    def __init__(self, join_key: str, encode) -> None:
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        self._join_key, self._encode, self._EntityKey, self._Value = join_key, encode, EntityKey, Value
        self._cache: dict[str, bytes] = {}

    def __getitem__(self, entity_id: str) -> bytes:
        b = self._cache.get(entity_id)
        if b is None:
            if len(self._cache) >= ENTITY_KEY_CACHE:
                self._cache.clear()
            key = self._EntityKey(join_keys=[self._join_key], entity_values=[self._Value(string_val=entity_id)])
            b = self._cache[entity_id] = self._encode(key)
        return b


class RedisRowWriter:
    """Feast's Redis rows (one hash per entity: a field per feature and ``_ts:<view>``),
    written with one ``HSET`` per row, all of a batch sent at once. Like Feast with
    ``skip_dedup``, a row replaces what is stored without reading its event time first (the
    sink keeps the newest update per entity per batch, and one entity's updates stay ordered in
    one partition)."""

    def __init__(self, store) -> None:
        from feast.infra.online_stores.helpers import _mmh3, _redis_key
        from feast.infra.online_stores.redis import _versioned_fv_name
        from google.protobuf.timestamp_pb2 import Timestamp

        config = store.config
        self._config = config.online_store
        self._client = store._get_provider().online_store._get_client(config.online_store)
        self._send = _packed_sender(self._client)
        self._Timestamp = Timestamp
        self.values = ValueBytes()
        self.lists = ListBytes(self.values)
        project, version = config.project, config.entity_key_serialization_version
        self._views: dict[str, tuple] = {}
        for entity in JOIN_KEYS:
            fv = _versioned_fv_name(store.get_stream_feature_view(stream_view_name(entity)), config)
            schema = stream_feature_schema(entity).items()
            fields = [(name, kind, _mmh3(f"{fv}:{name}")) for name, kind in schema if kind not in LIST_KINDS]
            list_fields = [(name, kind, _mmh3(f"{fv}:{name}"), (entity, name)) for name, kind in schema
                           if kind in LIST_KINDS]
            keys = _EntityKeys(JOIN_KEYS[entity], lambda k, p=project, v=version: _redis_key(
                p, k, entity_key_serialization_version=v))
            self._views[entity] = (f"_ts:{fv}".encode(), fields, list_fields, keys)

    def write(self, entity: str, updates: list, created: datetime) -> None:  # noqa: ARG002 - Feast's Redis rows keep no created time
        ts_field, fields, list_fields, keys = self._views[entity]
        encode, encode_list = self.values.encode, self.lists.encode
        Timestamp, ttl = self._Timestamp, self._config.key_ttl_seconds
        commands = []
        for u in updates:
            seconds, nanos, _ = _timestamp_parts(u.event_ts)
            key = keys[u.entity_id]
            args = [b"HSET", key, ts_field, Timestamp(seconds=seconds, nanos=nanos).SerializeToString()]
            feats = u.features
            for name, kind, field in fields:
                args.append(field)
                args.append(encode(kind, feats.get(name)))
            for name, kind, field, slot in list_fields:  # field order is irrelevant to a hash
                args.append(field)
                args.append(encode_list(kind, (slot, u.entity_id), feats.get(name)))
            commands.append(args)
            if ttl:
                commands.append([b"EXPIRE", key, ttl])
        if commands:
            self._send(commands)


def _packed_sender(client):
    """``send(commands)``: the commands in one write on one connection of ``client``'s pool,
    then every reply read (the first error reply raised after all are read; a connection error
    drops the connection, as redis-py's pipeline does). A cluster client, whose commands go to
    several nodes, keeps redis-py's pipeline."""
    import redis
    from redis.exceptions import ResponseError

    if not isinstance(client, redis.Redis):
        def pipelined(commands: list[list]) -> None:
            with client.pipeline(transaction=False) as pipe:
                for args in commands:
                    pipe.execute_command(*args)
                pipe.execute()
        return pipelined
    try:
        from hiredis import pack_command
    except ImportError:  # redis-py's own packer (pure Python)
        pack_command = None
    pool = client.connection_pool

    def send(commands: list[list]) -> None:
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py before 5.3 wants a command name
            conn = pool.get_connection("HSET")
        try:
            if pack_command is not None:
                conn.send_packed_command([b"".join([pack_command(tuple(args)) for args in commands])])
            else:
                conn.send_packed_command(conn.pack_commands(commands))
            error = None
            for _ in commands:
                try:
                    conn.read_response()
                except ResponseError as exc:
                    error = error or exc
        except BaseException:
            conn.disconnect()
            raise
        finally:
            pool.release(conn)
        if error is not None:
            raise error

    return send


class SqliteRowWriter:
    """Feast's SQLite rows (one per entity x feature: serialised value, its text form, event
    and created time), upserted with one ``executemany`` per batch in one transaction.

    The database is switched to write-ahead logging with ``synchronous=NORMAL`` on the
    writer's connection: a commit appends to the log without an fsync, and the features
    service's reads neither wait for a write nor make one wait. Measured on the sink's load
    (50k raw events of `bench.perf.pipeline_cpu`'s shape, 2026-12-03): 150 -> 122 µs CPU and 11.0 ->
    8.8 s wall per pass. What it gives up: a power cut (not a crash of the process) may lose
    the last commits; those are online values, which the entity's next update rewrites (the
    offline rows and the offsets are committed separately, after the offline write)."""

    def __init__(self, store) -> None:
        from feast.infra.key_encoding_utils import serialize_entity_key
        from feast.infra.online_stores.helpers import compute_table_id

        config = store.config
        if getattr(config.online_store, "vector_enabled", False) or getattr(
                config.online_store, "enable_openai_compatible_store", False):
            raise ValueError("SqliteRowWriter writes plain feature rows only (no vector / value_num columns)")
        online = store._get_provider().online_store
        self._conn = online._get_conn(config)
        self._conn.execute("PRAGMA journal_mode=WAL")  # persistent: every connection to the file
        self._conn.execute("PRAGMA synchronous=NORMAL")  # this connection's commits
        self.values = ValueBytes()
        version = config.entity_key_serialization_version
        versioning = config.registry.enable_online_feature_view_versioning
        self._views: dict[str, tuple] = {}
        for entity in JOIN_KEYS:
            table = compute_table_id(config.project, store.get_stream_feature_view(stream_view_name(entity)), versioning)
            quoted = '"' + table.replace('"', '""') + '"'
            sql = (f"INSERT INTO {quoted} (entity_key, feature_name, value, value_text, event_ts, created_ts) "
                   "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO UPDATE SET "
                   "value = excluded.value, value_text = excluded.value_text, "
                   "event_ts = excluded.event_ts, created_ts = excluded.created_ts;")
            keys = _EntityKeys(JOIN_KEYS[entity], lambda k, v=version: serialize_entity_key(
                k, entity_key_serialization_version=v))
            self._views[entity] = (sql, list(stream_feature_schema(entity).items()), keys)

    @staticmethod
    def _text(kind: str, v: Any) -> str | None:
        """Feast's ``value_text`` column: the scalar's ``str``, nothing for lists / nulls."""
        if v is None or kind in LIST_KINDS:
            return None
        return v if kind == "string" else str(v)

    def write(self, entity: str, updates: list, created: datetime) -> None:
        sql, fields, keys = self._views[entity]
        encode, text = self.values.encode, self._text
        # Feast registers sqlite3's datetime adapter as ``int(naive.timestamp())``: the same
        # integer, made once per update / batch here instead of once per row by the adapter.
        created_s = int(created.astimezone(timezone.utc).replace(tzinfo=None).timestamp())
        rows = []
        for u in updates:
            key = keys[u.entity_id]
            event_s = int(_timestamp_parts(u.event_ts)[2].replace(tzinfo=None).timestamp())
            feats = u.features
            for name, kind in fields:
                v = feats.get(name)
                rows.append((key, name, encode(kind, v), text(kind, v), event_s, created_s))
        with self._conn:
            self._conn.executemany(sql, rows)


def row_writer(store, fast: bool = True):
    """The fastest writer for the store's online store type (``fast=False``: Feast's own)."""
    kind = type(store._get_provider().online_store).__name__
    if fast and kind == "RedisOnlineStore":
        return RedisRowWriter(store)
    if fast and kind == "SqliteOnlineStore":
        return SqliteRowWriter(store)
    from features.online.read import OnlineWriter

    return OnlineWriter(store)
