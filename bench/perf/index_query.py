"""Retrieval query latency and throughput, top-k over clustered synthetic items (64-d).

    python -m bench.perf.index_query [--sizes 100000,1000000] [--queries 2000] [--http-queries 2000]

For every catalog size, in one run:
  * build time of the exact (IndexFlatIP) and the ANN (HNSW32) index, through the same code the
    refresher uses (``build_from_vectors``: id map + artifact with checksums);
  * ANN recall@k against exact search, on the benchmark's own query distribution;
  * in-process latency (query embedding + FAISS search + id map) p50/p99 and q/s, one query at a time;
  * HTTP latency p50/p99 and q/s (client and server in separate processes; server: 1 FAISS thread;
    client: keep-alive ``http.client``), sequential, and q/s with 4 concurrent clients;
  * ratios: exact / HNSW (in-process), HTTP / in-process (HNSW).
A PNG of the latencies is written beside the artifacts.
"""

from __future__ import annotations

import argparse
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from bench.rigs.index import (
    RetrieveClient,
    ServerProcess,
    SyntheticQueryModel,
    clustered_vectors,
    fmt,
)
from convcg.stats import latency_summary_ms
from index_refresher.builder import build_from_vectors
from index_refresher.index_build import IndexParams, exact_top_ids, recall_at_k
from registry.index_artifact import load_artifact
from retrieval.serving import ServingPair


def in_process(pair: ServingPair, model, users: list[str], k: int) -> tuple[dict, float]:
    lat = []
    started = time.perf_counter()
    for u in users:
        t = time.perf_counter()
        pair.search(model.embed_queries([{"user_id": u, "surface": "home"}]), k)
        lat.append(time.perf_counter() - t)
    return latency_summary_ms(lat), len(users) / (time.perf_counter() - started)


def http_sequential(url: str, users: list[str], k: int) -> tuple[dict, float]:
    client = RetrieveClient(url)
    for u in users[:50]:  # warm-up
        assert client.get(u, k)[0] == 200
    lat = []
    started = time.perf_counter()
    for u in users:
        t = time.perf_counter()
        status, _ = client.get(u, k)
        lat.append(time.perf_counter() - t)
        assert status == 200
    client.close()
    return latency_summary_ms(lat), len(users) / (time.perf_counter() - started)


def http_concurrent(url: str, users: list[str], k: int, clients: int) -> tuple[dict, float]:
    lat: list[float] = []
    lock = threading.Lock()

    def run(part: list[str]) -> None:
        mine = []
        client = RetrieveClient(url)
        for u in part:
            t = time.perf_counter()
            status, _ = client.get(u, k)
            mine.append(time.perf_counter() - t)
            assert status == 200
        client.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=run, args=(users[i::clients],)) for i in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latency_summary_ms(lat), len(users) / (time.perf_counter() - started)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100000,1000000")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--queries", type=int, default=2000, help="in-process ANN queries")
    p.add_argument("--exact-queries", type=int, default=300, help="in-process / HTTP exact queries")
    p.add_argument("--http-queries", type=int, default=2000, help="HTTP ANN queries")
    p.add_argument("--recall-queries", type=int, default=500)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=80)
    p.add_argument("--ef-search", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="var/bench/perf/index_query")
    p.add_argument("--keep", action="store_true", help="keep the artifacts")
    a = p.parse_args()

    import faiss

    faiss.omp_set_num_threads(1)  # as served: one thread per query
    workdir = Path(a.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    rows = []
    for size in [int(s) for s in a.sizes.split(",")]:
        print(f"\n=== {size:,} items x {a.dim}-d, top-{a.k} ===", flush=True)
        t = time.perf_counter()
        vectors = clustered_vectors(size, a.dim, a.clusters, a.seed)
        print(f"generated clustered vectors in {time.perf_counter() - t:.1f}s", flush=True)
        items = [f"item{i}" for i in range(size)]
        version = f"synthetic-{size}"
        model = SyntheticQueryModel(version, a.dim, a.clusters, a.seed)
        users = [f"user{i}" for i in range(max(a.queries, a.http_queries, a.recall_queries))]
        results = {}
        for kind, params in (("exact", IndexParams(exact_max_items=size + 1)),
                             ("hnsw", IndexParams(exact_max_items=0, hnsw_m=a.hnsw_m,
                                                  hnsw_ef_construction=a.ef_construction,
                                                  hnsw_ef_search=a.ef_search))):
            faiss.omp_set_num_threads(2)  # the refresher builds with every core
            t = time.perf_counter()
            path = build_from_vectors(workdir, version, items, vectors, params, recall_sample=200,
                                      recall_k=a.k, min_recall=0.0, seed=a.seed, progress=False)
            build_s = time.perf_counter() - t
            faiss.omp_set_num_threads(1)
            t = time.perf_counter()
            artifact = load_artifact(path, expected_model_version=version, expected_dim=a.dim)
            load_s = time.perf_counter() - t
            size_mb = sum(f.stat().st_size for f in path.iterdir()) / 1e6
            pair = ServingPair(model=model, artifact=artifact)
            n = a.queries if kind == "hnsw" else a.exact_queries
            stats, qps = in_process(pair, model, users[:n], a.k)
            res = {"build_s": build_s, "load_s": load_s, "artifact_mb": size_mb, "inproc": stats, "inproc_qps": qps}
            print(f"[{kind}] build+write {build_s:.1f}s (manifest build {artifact.manifest['build_seconds']:.1f}s), "
                  f"verify+load {load_s:.2f}s, artifact {size_mb:.0f} MB", flush=True)
            print(f"[{kind}] in-process: {fmt(stats)} qps={qps:.0f}", flush=True)
            if kind == "hnsw":
                queries = model.embed_queries([{"user_id": u} for u in users[:a.recall_queries]])
                # recall on the benchmark's own query distribution
                exact = exact_top_ids(vectors, np.array([*map(_sid, items)]), queries, a.k)
                _, approx = artifact.index.search(queries, a.k)
                res["recall"] = recall_at_k(approx, exact)
                res["recall_manifest"] = artifact.manifest["recall"]
                print(f"[hnsw] recall@{a.k} vs exact: {res['recall']:.4f} on {len(queries)} user queries "
                      f"({res['recall_manifest']:.4f} on item-neighbourhood queries at build)", flush=True)
            del pair, artifact
            with ServerProcess(workdir, a.dim, a.clusters, a.seed, threads=1, model_version=version,
                               index_version=path.name) as server:
                server.wait_serving()
                hn = a.http_queries if kind == "hnsw" else a.exact_queries
                stats, qps = http_sequential(server.url, users[:hn], a.k)
                cstats, cqps = http_concurrent(server.url, users[:hn], a.k, clients=4)
                rss = _rss_mb(server.component.pid)
            res.update(http=stats, http_qps=qps, http4=cstats, http4_qps=cqps, server_rss_mb=rss)
            print(f"[{kind}] HTTP sequential: {fmt(stats)} qps={qps:.0f}", flush=True)
            print(f"[{kind}] HTTP 4 clients:  {fmt(cstats)} qps={cqps:.0f}  (server RSS {rss:.0f} MB)", flush=True)
            results[kind] = res
        e, h = results["exact"], results["hnsw"]
        print(f"ratios @ {size:,}: exact/hnsw in-process p50 {e['inproc']['p50_ms'] / h['inproc']['p50_ms']:.1f}x, "
              f"p99 {e['inproc']['p99_ms'] / h['inproc']['p99_ms']:.1f}x; HTTP/in-process (hnsw) p50 "
              f"{h['http']['p50_ms'] / h['inproc']['p50_ms']:.1f}x p99 {h['http']['p99_ms'] / h['inproc']['p99_ms']:.1f}x")
        verdict = "PASS" if h["http"]["p99_ms"] <= 5.0 and h["recall"] >= 0.95 else "MISS"
        print(f"target @ {size:,} (HNSW, HTTP p99 <= 5 ms, recall@{a.k} >= 0.95): {verdict} "
              f"(p99 {h['http']['p99_ms']:.2f} ms, recall {h['recall']:.4f})", flush=True)
        rows.append((size, results))
        del vectors
        if not a.keep:
            shutil.rmtree(workdir / version, ignore_errors=True)
    plot(rows, workdir / "query_latency.png")


def _sid(item_id: str) -> int:
    from registry.idmap import stable_id

    return stable_id(item_id)


def _rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 1e6


def plot(rows, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, p50, p99 = [], [], []
    for size, results in rows:
        for kind in ("exact", "hnsw"):
            for path in ("inproc", "http"):
                labels.append(f"{size // 1000}k {kind}\n{path}")
                p50.append(results[kind][path]["p50_ms"])
                p99.append(results[kind][path]["p99_ms"])
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(max(6, len(labels) * 1.1), 4))
    ax.bar(x - 0.2, p50, 0.4, label="p50")
    ax.bar(x + 0.2, p99, 0.4, label="p99")
    ax.axhline(5.0, color="red", linestyle="--", linewidth=1, label="5 ms target (HNSW, HTTP)")
    ax.set_yscale("log")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("latency (ms, log)")
    ax.set_title("top-100 retrieval latency")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
