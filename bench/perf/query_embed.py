"""In-process time to embed one served query (no HTTP, no index), the frame path against the
path the retrieval service takes (``LoadedModel.embed_queries``).

    python -m bench.perf.query_embed [--queries 2000] [--users 500] [--seq-len 200] [--config retriever]

The model is an untrained (seeded) ``TwoTowerModel`` of the conversion retriever's config
(``training.learn.recipes.retriever_config``: attention over the newest 20 of 200, long-term mean,
shared item table; ``--config online``: ``online_model_config``, the sequence the aggregates
keep). Each query is the dict the service builds (``retrieval.validation.RetrieveRequest.query``)
from a user row of ``bench.system.retrieval_online.user_updates`` (stored sequence with times and
dwells, counts, rates) at ``as_of`` = now; a share ``--unknown`` of the users have no row (an
empty sequence). The two series alternate in blocks over the same queries:

* ``frame``: ``embed_query_frame(model, queries_frame([q]))``, the path every query took before
  the dict encoder (pandas frame, ``encode_queries``);
* ``service``: ``LoadedModel.embed_queries([q])``, what ``/retrieve`` calls.

Prints p50/p99/mean of each, the ratio, the largest difference between the two vectors of a
query, and the load average before and after. The frame path shares the encoder's rules and so
its speed-ups (vectorised sequence read, hashing without factorising): the ratio is the dict
view's gain alone. Against an older commit, run this file there too (it only uses names the
older code has: ``PYTHONPATH=<checkout> python bench/perf/query_embed.py``), alternating runs.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np


def service_queries(n_users: int, seq_len: int, n_items: int, unknown: float, now: float, seed: int) -> list[dict]:
    from bench.system.retrieval_online import user_updates
    from retrieval.validation import RetrieveRequest

    rng = np.random.default_rng(seed + 1)
    rows = {u.entity_id: u.features for u in user_updates(n_users, seq_len, n_items, now, seed)}
    out = []
    for user_id, features in rows.items():
        request = RetrieveRequest(user_id=user_id, surface="home", k=100)
        out.append(request.query({} if rng.random() < unknown else features, now))
    return out


def timed(fn, queries: list[dict], block: int, names: list[str]) -> tuple[dict[str, list[float]], float]:
    """Per series latencies (s) over the same queries in alternating blocks, and the largest
    absolute difference between the series' vectors."""
    lat: dict[str, list[float]] = {n: [] for n in names}
    diff = 0.0
    for b, start in enumerate(range(0, len(queries), block)):
        part = queries[start:start + block]
        vectors = {}
        for name in names[b % len(names):] + names[:b % len(names)]:
            out = []
            for q in part:
                t = time.perf_counter()
                out.append(fn[name]([q]))
                lat[name].append(time.perf_counter() - t)
            vectors[name] = np.concatenate(out)
        first = vectors[names[0]]
        diff = max(diff, *(float(np.abs(v - first).max()) for v in vectors.values()))
    return lat, diff


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--queries", type=int, default=2000, help="measured queries per series")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--seq-len", type=int, default=200, help="engagements stored per user")
    p.add_argument("--items", type=int, default=1_000_000, help="catalog the sequences draw from")
    p.add_argument("--unknown", type=float, default=0.1, help="share of queries for users without a row")
    p.add_argument("--config", choices=("retriever", "online"), default="retriever")
    p.add_argument("--block", type=int, default=50)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the service's default)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    import torch

    from convcg.stats import latency_summary_ms
    from model.encoding import queries_frame
    from model.inference import embed_query_frame
    from model.towers import TwoTowerModel
    from registry.store import LoadedModel
    from training.learn.recipes import online_model_config, retriever_config

    torch.set_num_threads(a.threads)
    config = retriever_config() if a.config == "retriever" else online_model_config()
    torch.manual_seed(a.seed)
    model = LoadedModel("bench", TwoTowerModel(config).eval(), config, {}, {})
    now = time.time()
    users = service_queries(a.users, a.seq_len, a.items, a.unknown, now, a.seed)
    rng = np.random.default_rng(a.seed + 7)
    queries = [users[i] for i in rng.integers(0, len(users), a.queries + a.warmup)]
    fn = {"frame": lambda qs: embed_query_frame(model.model, queries_frame(qs)),
          "service": model.embed_queries}
    names = list(fn)
    timed(fn, queries[:a.warmup], a.block, names)
    load_before = open("/proc/loadavg").read().split()[:3]
    lat, diff = timed(fn, queries[a.warmup:], a.block, names)
    load_after = open("/proc/loadavg").read().split()[:3]

    print(f"one query embedded in-process, config {a.config} (recent_items {config.recent_items}, attention over "
          f"{config.sequence.attention_items or config.recent_items}), {a.queries} queries per series, "
          f"{a.seq_len} stored engagements, {a.unknown:.0%} unknown users, torch threads {a.threads}; "
          f"load {' '.join(load_before)} -> {' '.join(load_after)} on {os.cpu_count()} cpus")
    res = {n: latency_summary_ms(v) for n, v in lat.items()}
    for name, r in res.items():
        print(f"  {name:8} p50 {r['p50_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms  mean {r['mean_ms']:.3f} ms")
    f, s = res["frame"], res["service"]
    print(f"ratio frame / service: p50 {f['p50_ms'] / s['p50_ms']:.2f}x, p99 {f['p99_ms'] / s['p99_ms']:.2f}x, "
          f"mean {f['mean_ms'] / s['mean_ms']:.2f}x; largest |frame - service| over the vectors {diff:.2e}")


if __name__ == "__main__":
    main()
