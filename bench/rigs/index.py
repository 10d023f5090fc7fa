"""Shared parts of the index benchmarks (not a benchmark itself).

- clustered synthetic item vectors (seeded) and a matching *synthetic query model*: a stand-in
  model version whose query tower maps a user id to a seeded vector near one of the clusters,
  so the retrieval service can be benchmarked over 1M synthetic items without a trained model;
- a retrieval server in a separate process (``python -m bench.rigs.index serve ...``)
  so that client and server do not share a GIL, or the real ``convcg retrieval serve`` over
  a model registry (``RetrievalServeProcess``);
- an untrained (seeded) model version published into a scratch registry;
- the printed form of a latency summary (``convcg.stats.latency_summary_ms``).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import numpy as np

from bench import ROOT
from loop.supervisor import Component


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
        import orjson

        status, body = self.request(f"/retrieve?user_id={user_id}&k={k}")
        return status, orjson.loads(body)

    def request(self, path: str) -> tuple[int, bytes]:
        """``GET path``: status and body; once more on a fresh connection when the server has
        closed the kept-alive one (uvicorn closes connections idle for 5 s)."""
        import http.client

        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self.conn.request("GET", path)
                resp = self.conn.getresponse()
                return resp.status, resp.read()
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

def publish_untrained_model(root: Path, config, seed: int = 0) -> str:
    """Publish a randomly initialised (seeded) ``TwoTowerModel`` of ``config`` into the registry
    at ``root`` and make it current; untrained weights cost the same to run as trained ones."""
    import torch

    from model.towers import TwoTowerModel
    from registry.store import ModelRegistry

    torch.manual_seed(seed)
    return ModelRegistry(root).publish(TwoTowerModel(config), config, {}, {})


def wait_healthy(component: Component, url: str, timeout: float = 300) -> None:
    """Until ``url`` answers 200 (raises if the component exits or the time runs out)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not component.alive:
            raise RuntimeError(f"{component.name} exited with {component.returncode}: {component.tail(30)}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{component.name} did not answer {url}")


class _Served:
    """A component serving HTTP on ``self.port``: health wait, stop, context manager."""

    port: int
    url: str
    component: Component

    def wait_serving(self, timeout: float = 300) -> None:
        wait_healthy(self.component, self.url + "/health", timeout)

    def metrics(self) -> list:
        from convcg.metrics_scrape import fetch_samples

        return fetch_samples(self.port)

    def stop(self) -> None:
        self.component.stop()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class RetrievalServeProcess(_Served):
    """``convcg retrieval serve`` as its own process, configured by ``CONVCG_INDEX_*`` ``env``
    (registry and index root, features URL, ...): it loads the registry's current version and
    newest artifact at start, exactly as deployed."""

    def __init__(self, env: dict[str, str], log_path: Path | None = None, name: str = "retrieval"):
        from convcg.kafka.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.component = Component(name, ["retrieval", "serve", "--port", str(self.port)], env, log_path,
                                   cwd=ROOT, stop_timeout_s=15).start()


class ServerProcess(_Served):
    def __init__(self, index_root: Path, dim: int, clusters: int, seed: int, threads: int = 1,
                 model_version: str | None = None, index_version: str | None = None):
        from convcg.kafka.broker import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["serve", "--index-root", str(index_root), "--port", str(self.port), "--dim", str(dim),
                "--clusters", str(clusters), "--seed", str(seed), "--threads", str(threads)]
        if model_version:
            args += ["--model-version", model_version]
        if index_version:
            args += ["--index-version", index_version]
        # its log goes to this bench's own output
        self.component = Component("retrieval-server", args, {}, None, module="bench.rigs.index", cwd=ROOT,
                                   stop_timeout_s=15).start()


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
