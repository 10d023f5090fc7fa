"""Shared parts of the index benchmarks (not a benchmark itself).

- clustered synthetic item vectors (seeded) and a matching *synthetic query model*: a stand-in
  model version whose query tower maps a user id to a seeded vector near one of the clusters,
  so the retrieval service can be benchmarked over 1M synthetic items without a trained model;
- a retrieval server in a separate process (``python bench/bench_index_common.py serve ...``)
  so that client and server do not share a GIL;
- latency statistics.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cluster_centers(dim: int, clusters: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = rng.standard_normal((clusters, dim)).astype(np.float32)
    return c / np.linalg.norm(c, axis=1, keepdims=True)


def clustered_vectors(n: int, dim: int, clusters: int, seed: int, spread: float = 0.35,
                      chunk: int = 200_000) -> np.ndarray:
    """``n`` L2-normalised vectors around ``clusters`` seeded centres (power-law cluster sizes)."""
    centers = cluster_centers(dim, clusters, seed)
    rng = np.random.default_rng(seed + 1)
    weights = 1.0 / np.arange(1, clusters + 1) ** 0.8
    weights /= weights.sum()
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        v = centers[rng.choice(clusters, size=m, p=weights)] + \
            (spread / np.sqrt(dim)) * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = v / np.linalg.norm(v, axis=1, keepdims=True)
    return out


class SyntheticQueryModel:
    """A benchmark stand-in for a model version over synthetic vectors (see module doc)."""

    def __init__(self, version: str, dim: int, clusters: int, seed: int, spread: float = 0.5):
        self.version = version
        self.dim = dim
        self.centers = cluster_centers(dim, clusters, seed)
        self.spread = spread

    def embed_queries(self, queries: list[dict]) -> np.ndarray:
        out = np.empty((len(queries), self.dim), dtype=np.float32)
        for i, q in enumerate(queries):
            h = int.from_bytes(hashlib.blake2b(str(q["user_id"]).encode(), digest_size=8).digest(), "little")
            rng = np.random.default_rng(h)
            v = self.centers[rng.integers(len(self.centers))] + \
                (self.spread / np.sqrt(self.dim)) * rng.standard_normal(self.dim).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
        return out

    def embed_items(self, catalog, item_features=None, batch_size: int = 4096) -> np.ndarray:
        raise NotImplementedError("synthetic benchmark vectors are given, not embedded")


def percentiles(latencies_s) -> dict[str, float]:
    a = np.asarray(latencies_s) * 1000.0
    if len(a) == 0:
        return {"n": 0, "p50_ms": float("nan"), "p99_ms": float("nan"), "max_ms": float("nan")}
    return {"n": int(len(a)), "p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)),
            "max_ms": float(a.max())}


def fmt(stats: dict) -> str:
    return " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


class RetrieveClient:
    """A lean keep-alive HTTP/1.1 client (``http.client``) for ``GET /retrieve``.

    httpx costs ~1-3 ms per request of client-side Python here, which would be measured as
    server latency; this costs ~0.2 ms."""

    def __init__(self, url: str, timeout: float = 30.0):
        from urllib.parse import urlsplit

        parts = urlsplit(url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.conn = None

    def get(self, user_id: str, k: int) -> tuple[int, dict]:
        import http.client

        import orjson

        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", f"/retrieve?user_id={user_id}&k={k}")
                resp = self.conn.getresponse()
                return resp.status, orjson.loads(resp.read())
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# --- a retrieval server in its own process ------------------------------------------------------

class ServerProcess:
    def __init__(self, index_root: Path, dim: int, clusters: int, seed: int, threads: int = 1,
                 model_version: str | None = None, index_version: str | None = None):
        from convcg.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, __file__, "serve", "--index-root", str(index_root), "--port", str(self.port),
               "--dim", str(dim), "--clusters", str(clusters), "--seed", str(seed), "--threads", str(threads)]
        if model_version:
            cmd += ["--model-version", model_version]
        if index_version:
            cmd += ["--index-version", index_version]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def wait_serving(self, timeout: float = 300) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError("server did not start serving")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def serve_main(argv: list[str]) -> None:
    import logging

    import faiss
    import uvicorn

    from retrieval.service import build_service, create_app
    from retrieval.settings import RetrievalSettings

    p = argparse.ArgumentParser()
    p.add_argument("--index-root", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--clusters", type=int, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model-version")
    p.add_argument("--index-version")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="server %(asctime)s %(levelname)s %(name)s: %(message)s")
    faiss.omp_set_num_threads(a.threads)
    settings = RetrievalSettings(index_root=Path(a.index_root), port=a.port)
    service = build_service(settings, model_loader=lambda v: SyntheticQueryModel(v, a.dim, a.clusters, a.seed))
    if a.model_version:
        result = service.loader.load(a.model_version, a.index_version)
        if not result.ok:
            raise SystemExit(f"initial load failed: {result.error}")
    uvicorn.run(create_app(service), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        serve_main(sys.argv[2:])
    else:
        print(__doc__)
