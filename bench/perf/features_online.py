"""Online feature lookups: 1 entity x 11 features, p50/p99 latency and lookups/s.

Compares, in one run and on the same store contents:
  sdk     Feast's Python SDK ``FeatureStore.get_online_features`` called in-process
  reader  ``features.online.read.OnlineReader.read`` in-process (what the service calls)
  http    ``convcg features serve`` over HTTP (keep-alive GET, one entity per request)
for the SQLite and the Redis online stores. Targets: p99 <= 2 ms on Redis (http), >= 3,000
lookups/s on this 2-core machine. Latency: one sequential client. Throughput: N client
processes hammering the server for a fixed time (clients share the 2 cores with the server).

    python -m bench.perf.features_online --entities 10000 --requests 5000 --seconds 10
"""

from __future__ import annotations

import argparse
import http.client
import multiprocessing as mp
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import orjson

from bench import ROOT
from convcg.stats import latency_summary_ms
from loop.supervisor import Component

VIEW = "item_stream"


def fill_store(settings, n_entities: int):
    from features.sink.worker import Batch, FeastWriter
    from tests.support.feature_samples import full_update

    writer = FeastWriter(settings)
    for start in range(0, n_entities, 5000):
        ups = [full_update("item", f"i{i}", 1.7e9, i) for i in range(start, min(n_entities, start + 5000))]
        writer.write_online(Batch(updates=ups))
    return writer.store


def time_calls(fn, ids: list[str]) -> list[float]:
    out = []
    for e in ids:
        t0 = time.perf_counter()
        fn(e)
        out.append(time.perf_counter() - t0)
    return out


FEATURES = ("impressions_1h", "impressions_1d", "impressions_7d", "engagements_1h", "engagements_1d",
            "engagements_7d", "conversions_1h", "conversions_1d", "conversions_7d", "ctr_7d", "cvr_7d")


def send_lookup(conn: http.client.HTTPConnection, feast_api: bool, entity_id: str) -> None:
    """ours: GET /online-features/<view>/<id>; Feast's server: POST /get-online-features."""
    if feast_api:
        body = orjson.dumps({"features": [f"{VIEW}:{f}" for f in FEATURES], "entities": {"item_id": [entity_id]}})
        conn.request("POST", "/get-online-features", body=body, headers={"Content-Type": "application/json"})
    else:
        conn.request("GET", f"/online-features/{VIEW}/{entity_id}")


def http_latency(port: int, ids: list[str], feast_api: bool = False) -> list[float]:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    out = []
    for e in ids:
        t0 = time.perf_counter()
        send_lookup(conn, feast_api, e)
        resp = conn.getresponse()
        body = resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200 and b"impressions_1h" in body, body[:200]
    conn.close()
    return out


def _hammer(port: int, n_entities: int, seconds: float, q, feast_api: bool) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    rng = np.random.default_rng(os.getpid())
    n, lat = 0, []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        send_lookup(conn, feast_api, f"i{rng.integers(n_entities)}")
        r = conn.getresponse()
        r.read()
        lat.append(time.perf_counter() - t0)
        n += r.status == 200
    q.put((n, lat))


def http_throughput(port: int, n_entities: int, clients: int, seconds: float, feast_api: bool = False) -> dict:
    q: mp.Queue = mp.Queue()
    procs = [mp.Process(target=_hammer, args=(port, n_entities, seconds, q, feast_api)) for _ in range(clients)]
    t0 = time.perf_counter()
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    total = sum(n for n, _ in results)
    lat = [x for _, l in results for x in l]
    return {"lookups_per_s": total / seconds, "clients": clients, "wall_s": wall, **latency_summary_ms(lat)}


def feast_server_main(port: int) -> None:
    """Feast's own Python feature server (feast.feature_server.get_app) over the same store."""
    import uvicorn
    from feast.feature_server import get_app

    from features.repo.store import open_store
    from features.settings import FeaturesSettings

    uvicorn.run(get_app(open_store(FeaturesSettings()), registry_ttl_sec=60), host="127.0.0.1", port=port,
                log_level="warning", access_log=False)


def start_server(env: dict, port: int, workers: int, log_path: Path, feast_server: bool = False) -> Component:
    """``convcg features serve`` (or, with ``feast_server``, Feast's own server run by this
    bench) as its own process, once its /health answers."""
    if feast_server:
        server = Component("feast-server", ["--feast-server-port", str(port)], env, log_path,
                           module="bench.perf.features_online", cwd=ROOT, stop_timeout_s=10)
    else:
        server = Component("features-serve", ["features", "serve", "--port", str(port), "--workers", str(workers)],
                           env, log_path, cwd=ROOT, stop_timeout_s=10)
    server.start()
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            c.request("GET", "/health")
            if c.getresponse().status == 200:
                return server
        except OSError:
            time.sleep(0.3)
    server.stop(kill=True)
    raise RuntimeError(f"server did not start: {server.tail(40)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--entities", type=int, default=10_000)
    ap.add_argument("--requests", type=int, default=5_000, help="sequential lookups per latency series")
    ap.add_argument("--seconds", type=float, default=10.0, help="throughput run length")
    ap.add_argument("--clients", type=int, default=3, help="client processes for the throughput run")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="uvicorn worker counts to try")
    ap.add_argument("--stores", nargs="+", default=["sqlite", "redis"])
    ap.add_argument("--no-feast-server", action="store_true", help="skip Feast's own feature server")
    ap.add_argument("--feast-server-port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.feast_server_port:
        return feast_server_main(args.feast_server_port)

    from convcg.kafka.broker import free_port
    from features.online.read import OnlineReader
    from features.repo.store import delete_redis_project_keys
    from features.settings import FeaturesSettings

    rng = np.random.default_rng(0)
    ids = [f"i{k}" for k in rng.integers(args.entities, size=args.requests)]
    rows = []
    for store_kind in args.stores:
        tmp = Path(tempfile.mkdtemp(prefix="bench-online-"))
        project = f"bench{uuid.uuid4().hex[:8]}"
        env_settings = {"CONVCG_FEATURES_REPO_DIR": str(tmp / "feast"), "CONVCG_FEATURES_PROJECT": project,
                        "CONVCG_FEATURES_ONLINE_STORE": store_kind}
        settings = FeaturesSettings(repo_dir=tmp / "feast", project=project, online_store=store_kind)
        try:
            store = fill_store(settings, args.entities)
            refs = [f"{VIEW}:{n}" for n in ("impressions_1h", "impressions_1d", "impressions_7d",
                                             "engagements_1h", "engagements_1d", "engagements_7d",
                                             "conversions_1h", "conversions_1d", "conversions_7d",
                                             "ctr_7d", "cvr_7d")]
            sdk = lambda e: store.get_online_features(features=refs, entity_rows=[{"item_id": e}]).to_dict()
            assert sdk("i1")["impressions_1h"] == [1]
            time_calls(sdk, ids[:200])  # warm-up
            sdk_lat = time_calls(sdk, ids)
            rows.append((store_kind, "sdk get_online_features", latency_summary_ms(sdk_lat), 1 / statistics.mean(sdk_lat)))
            reader = OnlineReader(store)
            rd = lambda e: reader.read(VIEW, [e])
            time_calls(rd, ids[:200])
            rd_lat = time_calls(rd, ids)
            rows.append((store_kind, "OnlineReader.read", latency_summary_ms(rd_lat), 1 / statistics.mean(rd_lat)))
            servers = [(f"http serve w={w}", w, False) for w in args.workers]
            if not args.no_feast_server:
                servers.append(("http feast feature server", 1, True))
            for name, workers, feast_api in servers:
                port = free_port()
                server = start_server(env_settings, port, workers, tmp / f"server-{port}.log", feast_api)
                try:
                    http_latency(port, ids[:300], feast_api)
                    lat = http_latency(port, ids, feast_api)
                    rows.append((store_kind, f"{name} (1 client)", latency_summary_ms(lat), 1 / statistics.mean(lat)))
                    tp = http_throughput(port, args.entities, args.clients, args.seconds, feast_api)
                    rows.append((store_kind, f"{name} ({args.clients} clients)",
                                 {k: tp[k] for k in ("p50_ms", "p99_ms", "mean_ms")}, tp["lookups_per_s"]))
                finally:
                    server.stop()
        finally:
            if store_kind == "redis":
                delete_redis_project_keys(settings)

    print(f"\nonline lookup, 1 entity x 11 features, {args.entities} entities, {args.requests} sequential lookups"
          f" (load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus, shared)")
    print(f"{'store':7} {'path':40} {'p50 ms':>8} {'p99 ms':>8} {'lookups/s':>10}")
    for store_kind, path, p, rate in rows:
        print(f"{store_kind:7} {path:40} {p['p50_ms']:8.3f} {p['p99_ms']:8.3f} {rate:10.0f}")
    for store_kind in args.stores:
        base = next(r for r in rows if r[0] == store_kind and r[1].startswith("sdk"))
        for r in rows:
            if r[0] == store_kind and r[1].startswith("http") and "1 client" in r[1]:  # ratio vs SDK
                print(f"{store_kind}: {r[1]} p99 / sdk p99 = {r[2]['p99_ms'] / base[2]['p99_ms']:.2f}x; "
                      f"p50 ratio {r[2]['p50_ms'] / base[2]['p50_ms']:.2f}x")
    red = [r for r in rows if r[0] == "redis" and r[1].startswith("http serve")]
    if red:
        best_p99 = min(r[2]["p99_ms"] for r in red if "1 client" in r[1])
        best_rate = max(r[3] for r in red if "clients)" in r[1])
        print(f"targets (redis, http): p99 <= 2 ms -> {best_p99:.3f} ms {'MET' if best_p99 <= 2 else 'MISSED'}; "
              f">= 3000 lookups/s -> {best_rate:.0f} {'MET' if best_rate >= 3000 else 'MISSED'}")


if __name__ == "__main__":
    main()
