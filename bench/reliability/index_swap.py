"""Hot swap under steady query load: errors and latency before, during and after the swap.

    python -m bench.reliability.index_swap [--items 1000000] [--rate 200] [--clients 4] [--steady-s 10]

A retrieval server (its own process) serves index A over clustered synthetic items; client
threads send top-k queries at a fixed total rate; then the server is told to load index B of
the same size (a second model version: same bytes, other versions) and swaps it in while the
load continues. Printed: errors (target 0), latency p50/p99 in the steady window before the
swap, during the swap (load start .. swap + 0.5 s) and after; the ratio of swap p99 to steady
p99 (target <= 2); the server-side swap duration. A PNG timeline is written too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from bench.rigs.index import (
    RetrieveClient,
    ServerProcess,
    clustered_vectors,
    fmt,
)
from convcg.metrics_scrape import parse_samples
from convcg.stats import latency_summary_ms
from index_refresher.builder import build_from_vectors
from index_refresher.index_build import IndexParams
from registry.index_artifact import MANIFEST_FILE, artifact_dir, new_index_version


def copy_as_version(path: Path, index_root: Path, model_version: str) -> Path:
    """The same index bytes published as another (model, index) version pair."""
    index_version = new_index_version()
    dst = artifact_dir(index_root, model_version, index_version)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(path, dst)
    manifest = json.loads((dst / MANIFEST_FILE).read_text())
    manifest.update(model_version=model_version, index_version=index_version)
    (dst / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2))
    return dst


class SteadyLoad:
    """``clients`` threads sending queries on a fixed schedule (total ``rate`` per second)."""

    def __init__(self, url: str, rate: float, clients: int, k: int):
        self.url, self.rate, self.clients, self.k = url, rate, clients, k
        self.stop = threading.Event()
        self.records: list[tuple[float, float, int, str]] = []  # send time, latency, status, model
        self.lock = threading.Lock()

    def run(self, idx: int) -> None:
        interval = self.clients / self.rate
        next_at = time.monotonic() + idx * interval / self.clients
        n = 0
        client = RetrieveClient(self.url)
        while not self.stop.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            sent = time.monotonic()
            try:
                status, body = client.get(f"user{idx}-{n}", self.k)
                model = body.get("model_version", "")
            except Exception as exc:  # transport failure counts as an error
                status, model = -1, repr(exc)
            with self.lock:
                self.records.append((sent, time.monotonic() - sent, status, model))
            n += 1
            next_at += interval
        client.close()

    def __enter__(self):
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(self.clients)]
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--clusters", type=int, default=2000)
    p.add_argument("--kind", choices=["hnsw", "exact"], default="hnsw")
    p.add_argument("--k", type=int, default=100)
    p.add_argument("--rate", type=float, default=200.0, help="total queries per second")
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--steady-s", type=float, default=10.0)
    p.add_argument("--swaps", type=int, default=2, help="swaps A->B, B->A, ... under load")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifact", default=None, help="reuse this index artifact (e.g. one kept by "
                   "bench.perf.index_query --keep, same --dim/--clusters/--seed) instead of building one")
    p.add_argument("--workdir", default="var/bench/reliability/index_swap")
    a = p.parse_args()

    import faiss

    workdir = Path(a.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    if a.artifact:
        path_a = copy_as_version(Path(a.artifact), workdir, "synthetic-a")
        manifest = json.loads((path_a / MANIFEST_FILE).read_text())
        a.items, a.kind = manifest["count"], "hnsw" if manifest["kind"] == "hnsw_ip" else "exact"
        print(f"reusing {a.artifact}: {a.kind}, {a.items:,} items", flush=True)
    else:
        vectors = clustered_vectors(a.items, a.dim, a.clusters, a.seed)
        params = IndexParams(exact_max_items=a.items + 1 if a.kind == "exact" else 0)
        faiss.omp_set_num_threads(2)
        t = time.perf_counter()
        path_a = build_from_vectors(workdir, "synthetic-a", [f"item{i}" for i in range(a.items)], vectors,
                                    params, recall_sample=100, recall_k=a.k, min_recall=0.0, progress=True)
        print(f"built {a.kind} index over {a.items:,} items in {time.perf_counter() - t:.1f}s", flush=True)
        del vectors
    path_b = copy_as_version(path_a, workdir, "synthetic-b")
    pairs = [("synthetic-a", path_a.name), ("synthetic-b", path_b.name)]

    import httpx

    swaps = []
    with ServerProcess(workdir, a.dim, a.clusters, a.seed, threads=1, model_version="synthetic-a",
                       index_version=path_a.name) as server:
        server.wait_serving()
        with SteadyLoad(server.url, a.rate, a.clients, a.k) as load, \
                httpx.Client(base_url=server.url, timeout=600) as admin:
            time.sleep(2.0)  # warm-up (not counted)
            steady_from = time.monotonic()
            time.sleep(a.steady_s)
            for i in range(a.swaps):
                model_version, index_version = pairs[(i + 1) % 2]
                started = time.monotonic()
                r = admin.post("/admin/load", json={"model_version": model_version, "index_version": index_version})
                done = time.monotonic()
                body = r.json()
                swaps.append((started, done, r.status_code, body.get("seconds")))
                print(f"swap {i + 1} -> {model_version}: HTTP {r.status_code}, server load+swap "
                      f"{body.get('seconds', float('nan')):.2f}s", flush=True)
                time.sleep(a.steady_s / 2)
            records = list(load.records)
        metrics = parse_samples(httpx.get(server.url + "/metrics").text)

    rec = np.array([(s, lat, st) for s, lat, st, _ in records])
    errors = int((rec[:, 2] != 200).sum())
    steady = rec[(rec[:, 0] >= steady_from) & (rec[:, 0] < swaps[0][0])]
    during_mask = np.zeros(len(rec), dtype=bool)
    for started, done, _, _ in swaps:
        during_mask |= (rec[:, 0] >= started) & (rec[:, 0] <= done + 0.5)
    during = rec[during_mask]
    after = rec[rec[:, 0] > swaps[-1][1] + 0.5]
    s, d, af = latency_summary_ms(steady[:, 1]), latency_summary_ms(during[:, 1]), latency_summary_ms(after[:, 1])
    achieved = len(steady) / (swaps[0][0] - steady_from)
    print(f"\n{a.items:,} items ({a.kind}), top-{a.k}, target rate {a.rate:.0f} q/s (achieved {achieved:.0f} q/s "
          f"steady), {a.clients} clients, {len(rec)} queries, {len(swaps)} swaps")
    print(f"errors: {errors} (target 0)")
    print(f"steady:      {fmt(s)}")
    print(f"during swap: {fmt(d)}")
    print(f"after swaps: {fmt(af)}")
    ratio = d["p99_ms"] / s["p99_ms"]
    print(f"p99 during swap / steady p99 = {ratio:.2f}x (target <= 2x): {'PASS' if ratio <= 2 and errors == 0 else 'MISS'}")
    shown = ("convcg_retrieval_swaps_total", "convcg_retrieval_swap_seconds_sum", "convcg_retrieval_refused",
             "convcg_retrieval_released")
    print("server metrics:", ", ".join(f"{m.name}{_labels(m.labels)} {m.value}" for m in metrics
                                      if m.name.startswith(shown)))
    plot(rec, swaps, steady_from, workdir / "swap_timeline.png", a)
    shutil.rmtree(workdir / "synthetic-a", ignore_errors=True)
    shutil.rmtree(workdir / "synthetic-b", ignore_errors=True)


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""


def plot(rec, swaps, t0, out: Path, a) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.5))
    ok = rec[:, 2] == 200
    ax.scatter(rec[ok, 0] - t0, rec[ok, 1] * 1000, s=2, label="query latency")
    if (~ok).any():
        ax.scatter(rec[~ok, 0] - t0, rec[~ok, 1] * 1000, s=8, color="red", label="error")
    for i, (started, done, _, _) in enumerate(swaps):
        ax.axvspan(started - t0, done - t0, color="orange", alpha=0.3, label="load + swap" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("seconds")
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"hot swap under load: {a.items:,} items ({a.kind}), {a.rate:.0f} q/s")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"plot: {out}")


if __name__ == "__main__":
    main()
