"""Retrieval with the user's fresh engagement sequence read from the online store at query time.

    python -m bench.system.retrieval_online [--items 1000000] [--users 10000] [--seq-len 200] [--queries 3000]
                                     [--keep | --reuse] [--compare-code PATH]

One run, every part a separate process talking as deployed:
  * user rows (the streaming user features: counts, rates and the last ``--seq-len`` engaged
    items with their times and dwells, newest first) written into a real Redis online store
    (``--redis``, a throw-away Feast project, its keys deleted at the end) through the features
    sink's writer (``features.sink.worker.FeastWriter.write_online``);
  * an untrained (seeded) ``TwoTowerModel`` with the conversion retriever's config
    (``training.learn.recipes.retriever_config``: attention over the newest 20 of 200, shared item
    table) published into a scratch registry; its item tower embeds a synthetic catalog of
    ``--items`` items and the refresher's ``build_artifact`` builds the HNSW32 artifact;
  * ``convcg features serve`` on that store, and three ``convcg retrieval serve`` processes on
    the same registry and artifact: one with ``CONVCG_INDEX_FEATURES_URL`` set (each /retrieve
    reads the user's features from the features service, which reads Redis), one with
    ``CONVCG_INDEX_FEATURES_SOURCE=store`` (it reads the same Feast store in-process, opened by
    its repo path; its answers are checked equal to the first one's), one without (the
    baseline: the same query path with no lookup, an empty sequence);
  * one sequential keep-alive client, alternating blocks of the same users against both
    services and, as a third series, the features service's own lookup: p50/p99 and q/s of
    each, the ratio, and the lookup's share of the service's query time (from its
    ``convcg_retrieval_feature_lookup_seconds`` and ``convcg_retrieval_query_seconds``);
  * with ``--compare-code PATH`` (another checkout, e.g. ``git archive`` of an older commit), one
    more service with the lookup running that code (its ``PYTHONPATH``) in the same rotation:
    a before/after of a code change under the same load.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from bench import ROOT
from bench.rigs.index import (
    RetrievalServeProcess,
    RetrieveClient,
    fmt,
    publish_untrained_model,
    wait_healthy,
)
from convcg.contract import FeatureUpdate, MetricNames, count_feature_names
from convcg.kafka.broker import free_port
from convcg.metrics_scrape import histogram_buckets, metric_sum
from convcg.stats import histogram_quantile, latency_summary_ms
from loop.supervisor import Component

TARGET_P99_MS = 5.0
QUERY_SECONDS = "convcg_retrieval_query_seconds"
LOOKUP_SECONDS = MetricNames.USER_FEATURE_READS
LOOKUP_FAILURES = MetricNames.total(MetricNames.USER_FEATURE_READ_FAILURES)
COMPARED = "with lookup, compared code"
IN_PROCESS = "in-process store read"


# --- data (pure) ---------------------------------------------------------------------------

def user_updates(n_users: int, seq_len: int, n_items: int, now: float, seed: int) -> list[FeatureUpdate]:
    """One full user row per user ``u<n>``: ``seq_len`` engagements with catalog items ``i<j>``
    (power-law popularity), newest first, the newest 30 s - 1 h before ``now``, gaps ~10 min;
    dwell log-normal (ms); window counts and rates."""
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    items = rng.choice(n_items, size=(n_users, seq_len), p=popularity / popularity.sum())
    newest = now - rng.uniform(30, 3600, n_users)
    gaps = rng.exponential(600.0, (n_users, seq_len))
    gaps[:, 0] = 0.0
    ts = newest[:, None] - np.cumsum(gaps, axis=1)
    dwell = rng.lognormal(8.5, 1.0, (n_users, seq_len)).round()
    counts = count_feature_names()
    out = []
    for u in range(n_users):
        feats: dict = {name: int(rng.integers(0, 50)) for name in counts}
        feats.update(ctr_7d=float(rng.uniform(0, 0.2)), cvr_7d=float(rng.uniform(0, 0.05)),
                     last_engaged_items=[f"i{j}" for j in items[u]], last_engaged_ts=ts[u].tolist(),
                     last_engaged_dwell_ms=dwell[u].tolist())
        out.append(FeatureUpdate(entity="user", entity_id=f"u{u}", event_ts=float(newest[u]),
                                 ingest_ms=int(now * 1000), features=feats))
    return out


# --- set-up --------------------------------------------------------------------------------

def write_users(settings, updates: list[FeatureUpdate], batch: int = 2000) -> float:
    """Write through the sink's online writer; returns seconds taken."""
    from features.sink.worker import Batch, FeastWriter

    writer = FeastWriter(settings)
    started = time.perf_counter()
    for start in range(0, len(updates), batch):
        writer.write_online(Batch(updates=updates[start:start + batch]))
    return time.perf_counter() - started


def build_index(workdir: Path, n_items: int, seed: int, threads: int, reuse: bool) -> tuple[Path, Path]:
    """Registry with the untrained retriever, and the refresher's HNSW artifact of its item
    tower over a synthetic catalog; reused from an earlier ``--keep`` run with ``--reuse``."""
    import faiss
    import torch

    from index_refresher.builder import build_artifact
    from index_refresher.settings import RefresherSettings
    from registry.index_artifact import read_manifest
    from registry.store import ModelRegistry
    from training.learn.recipes import retriever_config
    from training.synthetic import synthetic_catalog

    registry_root, index_root = workdir / "registry", workdir / "indexes"
    registry = ModelRegistry(registry_root)
    version = registry.current_version()
    if reuse and version and any((index_root / version).glob("*/manifest.json")):
        path = sorted((index_root / version).glob("*/manifest.json"))[-1].parent
        m = read_manifest(path)
        if m["count"] == n_items:
            print(f"reusing model {version} and artifact {path.name} ({m['count']:,} items, {m['kind']})", flush=True)
            return registry_root, index_root
    shutil.rmtree(workdir, ignore_errors=True)
    version = publish_untrained_model(registry_root, retriever_config(), seed)
    model = registry.load(version)
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)  # the refresher builds with every core
    t = time.perf_counter()
    catalog = synthetic_catalog(n_items, n_advertisers=max(20, n_items // 100), n_categories=200, seed=seed)
    print(f"catalog of {n_items:,} items in {time.perf_counter() - t:.1f}s", flush=True)
    settings = RefresherSettings(registry_root=registry_root, index_root=index_root, seed=seed)
    t = time.perf_counter()
    path = build_artifact(model, settings, catalog=catalog, progress=False)
    m = read_manifest(path)
    print(f"refresher build of {n_items:,} items: {time.perf_counter() - t:.1f}s (embed {m['embed_seconds']:.1f}s, "
          f"{m['kind']} build {m['build_seconds']:.1f}s, recall@{m['recall_k']} {m['recall']})", flush=True)
    return registry_root, index_root


# --- measuring -----------------------------------------------------------------------------

class LookupClient(RetrieveClient):
    """The features service's own single lookup (``GET /online-features/user_stream/<id>``)."""

    def get(self, user_id: str, k: int) -> tuple[int, dict]:  # noqa: ARG002 - same shape as RetrieveClient
        status, body = self.request(f"/online-features/user_stream/{user_id}")
        return status, {"bytes": len(body)}


def interleaved(clients: dict, users: list[str], k: int, block: int) -> dict[str, dict]:
    """The same users, in blocks of ``block``, against every client in turn (the order rotates
    per block, so load drifts hit every series alike). Per series: latencies and wall time."""
    names = list(clients)
    lat = {n: [] for n in names}
    wall = dict.fromkeys(names, 0.0)
    for b, start in enumerate(range(0, len(users), block)):
        part = users[start:start + block]
        for name in names[b % len(names):] + names[:b % len(names)]:
            client = clients[name]
            t0 = time.perf_counter()
            for u in part:
                t = time.perf_counter()
                status, _ = client.get(u, k)
                lat[name].append(time.perf_counter() - t)
                assert status == 200, (name, u, status)
            wall[name] += time.perf_counter() - t0
    return {n: {**latency_summary_ms(lat[n]), "qps": len(lat[n]) / wall[n]} for n in names}


def histogram_delta(before: list, after: list, name: str) -> tuple[float, float, list[tuple[float, float]]]:
    """(count, sum, cumulative buckets) of histogram ``name`` observed between two scrapes."""
    b0 = dict(histogram_buckets(before, name))
    buckets = [(le, c - b0.get(le, 0.0)) for le, c in histogram_buckets(after, name)]
    return (metric_sum(after, f"{name}_count") - metric_sum(before, f"{name}_count"),
            metric_sum(after, f"{name}_sum") - metric_sum(before, f"{name}_sum"), buckets)


def items_of(url: str, user_id: str, k: int) -> list[str]:
    client = RetrieveClient(url)
    try:
        status, body = client.get(user_id, k)
        assert status == 200, body
        return [h["item_id"] for h in body["items"]]
    finally:
        client.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--users", type=int, default=10_000)
    p.add_argument("--seq-len", type=int, default=200, help="engagements stored per user (the model reads 200)")
    p.add_argument("--queries", type=int, default=3000, help="measured queries per series")
    p.add_argument("--block", type=int, default=100, help="queries per series before switching series")
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--redis", default="", help="an external Redis host:port for the online store (a throw-away "
                                              "project on it); default: a private redis-server started for the run")
    p.add_argument("--threads", type=int, default=2, help="torch / FAISS threads of the index build")
    p.add_argument("--inline-queries", action="store_true",
                   help="both services answer on the event loop (CONVCG_INDEX_INLINE_QUERIES), not the thread pool")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default="var/bench/system/retrieval_online")
    p.add_argument("--keep", action="store_true", help="keep the registry and the artifact")
    p.add_argument("--reuse", action="store_true", help="reuse a kept registry and artifact of the same size")
    p.add_argument("--compare-code", default="",
                   help="also serve with the lookup from the code at this path (PYTHONPATH), as one more series")
    a = p.parse_args()

    from features.repo.store import delete_redis_project_keys
    from features.settings import FeaturesSettings

    workdir = (ROOT / a.workdir).absolute()
    registry_root, index_root = build_index(workdir, a.items, a.seed, a.threads, a.reuse)
    private_redis = None
    if not a.redis:
        from convcg.process.redis_server import start_redis

        private_redis = start_redis(workdir / "redis", log_path=workdir / "redis.log")
        a.redis = private_redis.connection
    project = f"benchret{uuid.uuid4().hex[:8]}"
    feast_dir = workdir / f"feast-{project}"
    settings = FeaturesSettings(repo_dir=feast_dir, labels_dir=feast_dir / "labels", project=project,
                                online_store="redis", redis_connection=a.redis)
    components: list = []
    try:
        now = time.time()
        updates = user_updates(a.users, a.seq_len, a.items, now, a.seed)
        took = write_users(settings, updates)
        print(f"wrote {a.users:,} user rows ({a.seq_len} engagements each) into Redis {a.redis} project "
              f"{project} through the sink's writer in {took:.1f}s ({a.users / took:,.0f} rows/s)", flush=True)
        features_env = {"CONVCG_FEATURES_REPO_DIR": str(feast_dir), "CONVCG_FEATURES_PROJECT": project,
                        "CONVCG_FEATURES_ONLINE_STORE": "redis", "CONVCG_FEATURES_REDIS_CONNECTION": a.redis}
        features_port = free_port()
        features = Component("features-serve", ["features", "serve", "--port", str(features_port)], features_env,
                             workdir / "features-serve.log", cwd=ROOT, stop_timeout_s=10).start()
        components.append(features)
        index_env = {"CONVCG_INDEX_REGISTRY_ROOT": str(registry_root), "CONVCG_INDEX_INDEX_ROOT": str(index_root),
                     "CONVCG_INDEX_INLINE_QUERIES": "1" if a.inline_queries else "0"}
        with_lookup = RetrievalServeProcess({**index_env, "CONVCG_INDEX_FEATURES_URL": f"http://127.0.0.1:{features_port}"},
                                            workdir / "retrieval-lookup.log", name="retrieval-lookup")
        components.append(with_lookup)
        in_process = RetrievalServeProcess({**index_env, "CONVCG_INDEX_FEATURES_SOURCE": "store",
                                            "CONVCG_INDEX_FEATURES_REPO": str(feast_dir)},
                                           workdir / "retrieval-store.log", name="retrieval-store")
        components.append(in_process)
        without = RetrievalServeProcess({**index_env, "CONVCG_INDEX_FEATURES_URL": ""},
                                        workdir / "retrieval-plain.log", name="retrieval-plain")
        components.append(without)
        compared = None
        if a.compare_code:
            code = str(Path(a.compare_code).absolute())
            compared = RetrievalServeProcess({**index_env, "CONVCG_INDEX_FEATURES_URL": f"http://127.0.0.1:{features_port}",
                                              "PYTHONPATH": code}, workdir / "retrieval-compare.log",
                                             name="retrieval-compare")
            components.append(compared)
        wait_healthy(features, f"http://127.0.0.1:{features_port}/health", 120)
        t = time.perf_counter()
        with_lookup.wait_serving(900)
        in_process.wait_serving(900)
        without.wait_serving(900)
        if compared is not None:
            compared.wait_serving(900)
        print(f"features service and the retrieval services serving ({time.perf_counter() - t:.1f}s more "
              "for the retrieval services)", flush=True)

        rng = np.random.default_rng(a.seed + 7)
        users = [f"u{i}" for i in rng.integers(0, a.users, a.queries + a.warmup)]
        differ = sum(items_of(with_lookup.url, u, a.k) != items_of(without.url, u, a.k) for u in users[:20])
        print(f"sanity: top-{a.k} with the sequence differs from without for {differ}/20 users", flush=True)
        assert differ >= 15, "the served query does not seem to read the stored sequence"
        same = sum(items_of(with_lookup.url, u, a.k) == items_of(in_process.url, u, a.k) for u in users[:20])
        print(f"sanity: the in-process store read answers as the features service does for {same}/20 users", flush=True)
        assert same == 20, "the in-process store read does not give the features service's answer"

        clients = {"with lookup": RetrieveClient(with_lookup.url), IN_PROCESS: RetrieveClient(in_process.url),
                   "without lookup": RetrieveClient(without.url),
                   "features lookup alone": LookupClient(f"http://127.0.0.1:{features_port}")}
        if compared is not None:
            clients[COMPARED] = RetrieveClient(compared.url)
            differ = sum(items_of(with_lookup.url, u, a.k) != items_of(compared.url, u, a.k) for u in users[:20])
            print(f"sanity: top-{a.k} of this code differs from the compared code's for {differ}/20 users", flush=True)
        interleaved(clients, users[:a.warmup], a.k, a.block)  # warm-up
        before, before_store = with_lookup.metrics(), in_process.metrics()
        load_before = open("/proc/loadavg").read().split()[:3]
        res = interleaved(clients, users[a.warmup:], a.k, a.block)
        load_after = open("/proc/loadavg").read().split()[:3]
        after, after_store = with_lookup.metrics(), in_process.metrics()
        for c in clients.values():
            c.close()
    finally:
        for c in reversed(components):
            (c.component if hasattr(c, "component") else c).stop()
        deleted = delete_redis_project_keys(settings)
        print(f"cleanup: deleted {deleted:,} Redis keys of project {project}", flush=True)
        shutil.rmtree(feast_dir, ignore_errors=True)
        if private_redis is not None:
            private_redis.stop()
        if not a.keep:
            shutil.rmtree(workdir, ignore_errors=True)

    n_q, query_s, _ = histogram_delta(before, after, QUERY_SECONDS)
    n_l, lookup_s, lookup_buckets = histogram_delta(before, after, LOOKUP_SECONDS)
    failures = metric_sum(after, LOOKUP_FAILURES) - metric_sum(before, LOOKUP_FAILURES)
    n_sq, store_query_s, _ = histogram_delta(before_store, after_store, QUERY_SECONDS)
    n_sl, store_lookup_s, _ = histogram_delta(before_store, after_store, LOOKUP_SECONDS)
    store_failures = metric_sum(after_store, LOOKUP_FAILURES) - metric_sum(before_store, LOOKUP_FAILURES)
    print(f"\ntop-{a.k} over {a.items:,} items (HNSW32), {a.users:,} users x {a.seq_len} engagements in Redis, "
          f"{a.queries} sequential queries per series (1 keep-alive client, blocks of {a.block}), "
          f"queries answered {'on the event loop' if a.inline_queries else 'in the thread pool'}; "
          f"load {' '.join(load_before)} -> {' '.join(load_after)} on {os.cpu_count()} cpus")
    for name, r in res.items():
        print(f"  {name:22} {fmt({k: v for k, v in r.items() if k != 'qps'})} q/s={r['qps']:.0f}")
    w, b = res["with lookup"], res["without lookup"]
    if COMPARED in res:
        c = res[COMPARED]
        print(f"ratio compared code / this code, with lookup: p50 {c['p50_ms'] / w['p50_ms']:.2f}x, "
              f"p99 {c['p99_ms'] / w['p99_ms']:.2f}x, mean {c['mean_ms'] / w['mean_ms']:.2f}x ({a.compare_code})")
    print(f"ratio with / without lookup: p50 {w['p50_ms'] / b['p50_ms']:.2f}x, p99 {w['p99_ms'] / b['p99_ms']:.2f}x, "
          f"mean {w['mean_ms'] / b['mean_ms']:.2f}x")
    print(f"inside the service (its metrics, {n_q:.0f} queries): query mean {1000 * query_s / n_q:.3f} ms, "
          f"feature lookup mean {1000 * lookup_s / n_l:.3f} ms (p99 <= {1000 * histogram_quantile(lookup_buckets, 0.99):g} ms "
          f"bucket) = {100 * lookup_s / query_s:.0f}% of the query time, "
          f"{100 * lookup_s / n_l / (w['mean_ms'] / 1000):.0f}% of the HTTP time; failed lookups {failures:.0f}")
    print(f"in-process store read (its metrics, {n_sq:.0f} queries): query mean {1000 * store_query_s / n_sq:.3f} ms, "
          f"read mean {1000 * store_lookup_s / n_sl:.3f} ms; failed reads {store_failures:.0f}")
    size = f"{a.items // 1_000_000}M" if a.items >= 1_000_000 else f"{a.items:,}"
    for label, r, failed in (("through the features service", w, failures), (IN_PROCESS, res[IN_PROCESS], store_failures)):
        verdict = "met" if r["p99_ms"] <= TARGET_P99_MS and failed == 0 and r["n"] == a.queries else "missed"
        print(f"retrieval top-{a.k} over {size} with the online sequence (Redis) {label}: p50 {r['p50_ms']:.2f} ms "
              f"p99 {r['p99_ms']:.2f} ms, {r['qps']:.0f} q/s, {failed:.0f} failed lookups; without lookup p99 "
              f"{b['p99_ms']:.2f} ms; target p99 <= {TARGET_P99_MS:g} ms: {verdict}")


if __name__ == "__main__":
    main()
