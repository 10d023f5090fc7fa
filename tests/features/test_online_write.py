"""The sink's fast online writers store exactly what Feast's own ``online_write_batch`` stores
(the session's private redis-server and real SQLite), and the Feast SDK reads it back."""

from __future__ import annotations

import random
import sqlite3
import uuid
from datetime import datetime, timezone

import pytest

from convcg.contract import FeatureUpdate
from features.online.read import OnlineWriter
from features.repo.definitions import JOIN_KEYS, stream_feature_schema
from features.online.write import (
    ListBytes,
    RedisRowWriter,
    SqliteRowWriter,
    ValueBytes,
    row_writer,
)
from features.repo.store import apply_repo, delete_redis_project_keys
from features.settings import FeaturesSettings

CREATED = datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=timezone.utc)


def _random_updates(seed: int, n: int = 300) -> list[FeatureUpdate]:
    """Updates with the values that are easy to get wrong: zeros, nulls, empty lists,
    large counts, floats that round at the microsecond, unicode ids."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        entity = ("user", "item", "advertiser")[i % 3]
        feats = {}
        for name, kind in stream_feature_schema(entity).items():
            r = rng.random()
            if r < 0.1:
                feats[name] = None
            elif kind == "int":
                feats[name] = rng.choice([0, 1, 2, rng.randrange(10**12)])
            elif kind == "float":
                feats[name] = rng.choice([0.0, 0.02, rng.random(), 1e-300])
            elif kind == "floats":
                feats[name] = [rng.choice([0.0, -0.0, 1_700_000_000.25, rng.random()]) for _ in range(rng.randrange(0, 4))]
            else:
                feats[name] = [f"i{rng.randrange(100)}" for _ in range(rng.randrange(0, 4))]
        ts = 1_700_000_000 + rng.random() * 1e6 + rng.choice([0.0, 0.0000005, 0.9999996])
        out.append(FeatureUpdate(entity=entity, entity_id=rng.choice([f"e{i}", f"ü-{i}", str(i)]),
                                 event_ts=ts, ingest_ms=0, features=feats))
    return out


def _write_all(writer, updates: list[FeatureUpdate]) -> None:
    for entity in JOIN_KEYS:
        writer.write(entity, [u for u in updates if u.entity == entity], CREATED)


def _settings(tmp_path, store: str, **extra) -> FeaturesSettings:
    return FeaturesSettings(repo_dir=tmp_path / "feast", project=f"t{uuid.uuid4().hex[:10]}", online_store=store, **extra)


def _redis_dump(settings: FeaturesSettings) -> dict:
    import redis

    host, _, port = settings.redis_connection.partition(":")
    client = redis.Redis(host=host, port=int(port))
    return {k: client.hgetall(k) for k in client.scan_iter(match=b"*" + settings.project.encode(), count=1000)}


def _sqlite_dump(settings: FeaturesSettings) -> dict:
    conn = sqlite3.connect(settings.sqlite_file)
    tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    return {t: sorted(conn.execute(f'SELECT * FROM "{t}"').fetchall()) for t in tables if t.startswith(settings.project)}


@pytest.mark.parametrize("store_kind", ["redis", "sqlite"])
def test_fast_rows_store_the_same_bytes_as_feast(tmp_path, store_kind):
    s = _settings(tmp_path, store_kind)
    store = apply_repo(s)
    dump = _redis_dump if store_kind == "redis" else _sqlite_dump
    fast = row_writer(store)
    assert isinstance(fast, RedisRowWriter if store_kind == "redis" else SqliteRowWriter)
    try:
        for seed in (0, 1):  # second round overwrites the first: upserts must match too
            updates = _random_updates(seed)
            _write_all(OnlineWriter(store), updates)
            by_feast = dump(s)
            if store_kind == "redis":
                delete_redis_project_keys(s)
            else:
                for table in by_feast:
                    with sqlite3.connect(s.sqlite_file) as c:
                        c.execute(f'DELETE FROM "{table}"')
            if seed == 1:  # rows of round 0 stored by the fast writer, then overwritten
                _write_all(fast, _random_updates(0))
            _write_all(fast, updates)
            by_fast = dump(s)
            assert sum(len(v) for v in by_feast.values()) > 0
            assert by_fast == by_feast
    finally:
        if store_kind == "redis":
            delete_redis_project_keys(s)


@pytest.mark.parametrize("store_kind", ["redis", "sqlite"])
def test_feast_sdk_reads_what_the_fast_writer_wrote(tmp_path, store_kind):
    s = _settings(tmp_path, store_kind)
    store = apply_repo(s)
    try:
        values = {"int": 7, "float": 0.25, "strings": ["i3", "i1"], "floats": [1_700_000_100.5, 0.0]}
        feats = {n: values[k] for n, k in stream_feature_schema("user").items()}
        feats["impressions_1h"] = None
        u = FeatureUpdate(entity="user", entity_id="u-1", event_ts=1_700_000_123.5, ingest_ms=0, features=feats)
        row_writer(store).write("user", [u], CREATED)
        refs = [f"user_stream:{n}" for n in feats]
        got = store.get_online_features(features=refs, entity_rows=[{"user_id": "u-1"}, {"user_id": "nobody"}]).to_dict()
        for n, v in feats.items():
            assert got[n] == [v, None], n
    finally:
        if store_kind == "redis":
            delete_redis_project_keys(s)


def test_value_bytes_are_the_protobuf_encoding_and_zero_keeps_its_sign():
    from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value

    vb = ValueBytes()
    for _ in range(2):  # second pass is served from the memo
        assert vb.encode("int", 0) == Value(int64_val=0).SerializeToString() != vb.empty
        assert vb.encode("int", 123) == Value(int64_val=123).SerializeToString()
        assert vb.encode("float", 0.5) == Value(double_val=0.5).SerializeToString()
        assert vb.encode("float", -0.0) == Value(double_val=-0.0).SerializeToString()
        assert vb.encode("float", 0.0) == Value(double_val=0.0).SerializeToString()
        assert vb.encode("strings", ["a"]) == Value(string_list_val=StringList(val=["a"])).SerializeToString()
        assert vb.encode("floats", [1.5, 2.0]) == Value(double_list_val=DoubleList(val=[1.5, 2.0])).SerializeToString()
        assert vb.encode("int", None) == Value().SerializeToString()
    assert vb.encode("float", -0.0) != vb.encode("float", 0.0)


def test_convcg_up_default_store_holds_feast_bytes_and_the_feast_sdk_reads_them(tmp_path):
    """The store `convcg up` runs on (a private redis-server when the binary is on PATH, else
    SQLite): the sink's writer stores what Feast's own writer stores, and the Feast SDK reads
    back the values written."""
    from convcg.process.redis_server import redis_server_binary
    from loop.online_store import resolve_store, start_online_store

    online = start_online_store("auto", tmp_path)
    try:
        assert online.kind == resolve_store("auto") == ("redis" if redis_server_binary() else "sqlite")
        extra = {"redis_connection": online.server.connection} if online.server else {}
        s = _settings(tmp_path, online.kind, **extra)
        store = apply_repo(s)
        dump = _redis_dump if online.kind == "redis" else _sqlite_dump
        updates = _random_updates(7)
        _write_all(OnlineWriter(store), updates)
        by_feast = dump(s)
        for key in list(by_feast):
            if online.kind == "redis":
                delete_redis_project_keys(s)
            else:
                with sqlite3.connect(s.sqlite_file) as c:
                    c.execute(f'DELETE FROM "{key}"')
        fast = row_writer(store)
        assert isinstance(fast, RedisRowWriter if online.kind == "redis" else SqliteRowWriter)
        _write_all(fast, updates)
        assert sum(len(v) for v in by_feast.values()) > 0 and dump(s) == by_feast
        newest = {}
        for u in updates:  # the newest write of each user wins
            if u.entity == "user":
                newest[u.entity_id] = u
        ids = sorted(newest)[:20]
        refs = [f"user_stream:{n}" for n in stream_feature_schema("user")]
        got = store.get_online_features(features=refs, entity_rows=[{"user_id": i} for i in ids]).to_dict()
        for name in stream_feature_schema("user"):
            assert got[name] == [newest[i].features.get(name) for i in ids], name
    finally:
        online.stop()


def test_list_bytes_serialise_again_only_what_changed_and_keep_the_sign_of_zero():
    from feast.protos.feast.types.Value_pb2 import DoubleList, StringList, Value

    def floats(v):
        return Value(double_list_val=DoubleList(val=v)).SerializeToString()

    made = []
    vb = ValueBytes()
    encode = vb.encode
    vb.encode = lambda kind, v: made.append(kind) or encode(kind, v)
    lists = ListBytes(vb, limit=4)
    seq = [1_700_000_000.5, 0.0]
    assert lists.encode("floats", "u1", seq) == floats(seq)
    assert lists.encode("floats", "u1", list(seq)) == floats(seq) and made == ["floats"]  # same list: memo
    assert lists.encode("floats", "u1", [1_700_000_000.5, -0.0]) == floats([1_700_000_000.5, -0.0])  # -0.0 == 0.0
    seq.append(3.0)  # the caller's list changed after it was written: not what is remembered
    assert lists.encode("floats", "u1", seq) == floats(seq)
    assert lists.encode("floats", "u2", seq) == floats(seq)  # another entity has its own entry
    assert lists.encode("strings", "u1s", ["a", "b"]) == Value(string_list_val=StringList(val=["a", "b"])).SerializeToString()
    assert lists.encode("strings", "u1s", ["a", "c"]) == Value(string_list_val=StringList(val=["a", "c"])).SerializeToString()
    assert lists.encode("floats", "u1", None) == vb.empty
    assert made == ["floats"] * 4 + ["strings"] * 2 + ["floats"]
    for k in range(10):  # bounded: cleared when full, still right after
        assert lists.encode("floats", f"x{k}", [float(k)]) == floats([float(k)])
    assert len(lists._last) <= 4


def test_packed_redis_writes_read_every_reply_and_raise_the_first_error(tmp_path):
    import redis
    from redis.exceptions import ResponseError

    from features.online.write import _packed_sender

    s = _settings(tmp_path, "redis")
    host, _, port = s.redis_connection.partition(":")
    client = redis.Redis(host=host, port=int(port))
    base = f"t{uuid.uuid4().hex[:10]}"
    try:
        client.set(f"{base}:str", b"x")
        send = _packed_sender(client)
        with pytest.raises(ResponseError, match="WRONGTYPE"):
            send([[b"HSET", f"{base}:a", b"f", b"1"], [b"HSET", f"{base}:str", b"f", b"2"],
                  [b"HSET", f"{base}:b", b"f", b"3"], [b"EXPIRE", f"{base}:b", 100]])
        assert client.hgetall(f"{base}:a") == {b"f": b"1"} and client.hgetall(f"{base}:b") == {b"f": b"3"}
        assert 0 < client.ttl(f"{base}:b") <= 100
        send([[b"HSET", f"{base}:a", b"g", b"4"]])  # the connection went back to the pool in sync
        assert client.hgetall(f"{base}:a") == {b"f": b"1", b"g": b"4"}
        assert client.ping()
    finally:
        client.delete(f"{base}:str", f"{base}:a", f"{base}:b")


def test_the_sqlite_writer_puts_the_store_in_wal_mode_and_feast_still_reads_it(tmp_path):
    """Write-ahead logging is a property of the database file: the features service's own
    connection (Feast's) reads in it too, and sees each committed write."""
    s = _settings(tmp_path, "sqlite")
    store = apply_repo(s)
    with sqlite3.connect(s.sqlite_file) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # Feast's default
    writer = row_writer(store)
    with sqlite3.connect(s.sqlite_file) as c:
        assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert writer._conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
    reader = apply_repo(s)  # another FeatureStore, as `convcg features serve` opens
    for n in (1, 2):
        feats = {name: (n if kind == "int" else None) for name, kind in stream_feature_schema("item").items()}
        writer.write("item", [FeatureUpdate(entity="item", entity_id="i1", event_ts=1_700_000_000 + n, ingest_ms=0,
                                            features=feats)], CREATED)
        got = reader.get_online_features(features=["item_stream:impressions_1h"],
                                         entity_rows=[{"item_id": "i1"}]).to_dict()
        assert got["impressions_1h"] == [n]
