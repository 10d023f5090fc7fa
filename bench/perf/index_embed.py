"""Embedding throughput of a real two-tower model and the refresher's full artifact build.

    python -m bench.perf.index_embed [--items 200000] [--registry var/registry]

Model: the registry's current version if ``--registry`` has one; otherwise a model with the
training component's default ``ModelConfig`` (64-d, parallel DCNv2 + MLP towers; untrained
weights cost the same to run) published into a scratch registry. Printed, in one run:
  * item-tower throughput (items/s) through the refresher's batched ``embed_catalog``;
  * the tiny test config's throughput as a baseline, and the ratio;
  * query-tower latency per single query (p50/p99: the retrieval hot path);
  * the full refresher build (embed + index + recall + checksummed artifact) time.
"""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from bench.rigs.index import fmt, publish_untrained_model
from convcg.stats import latency_summary_ms
from index_refresher.builder import build_artifact
from index_refresher.index_build import embed_catalog
from index_refresher.settings import RefresherSettings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=200_000)
    p.add_argument("--registry", default=None, help="use this registry's current version")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=2, help="torch / FAISS threads for the build")
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--workdir", default="var/bench/perf/index_embed")
    a = p.parse_args()

    import faiss
    import torch

    from model.config import ModelConfig
    from registry.store import ModelRegistry
    from tests.support.tiny_models import tiny_config
    from training.synthetic import synthetic_catalog

    torch.set_num_threads(a.threads)
    faiss.omp_set_num_threads(a.threads)
    workdir = Path(a.workdir)
    shutil.rmtree(workdir, ignore_errors=True)
    catalog = synthetic_catalog(a.items, n_advertisers=max(20, a.items // 100), n_categories=200)
    registry_root = Path(a.registry) if a.registry else workdir / "registry"
    registry = ModelRegistry(registry_root)
    if registry.current_version() is None:
        if a.registry:
            raise SystemExit(f"registry {a.registry} has no current version")
        publish_untrained_model(registry_root, ModelConfig())
    model = registry.load()
    tiny_root = workdir / "tiny-registry"
    tiny = ModelRegistry(tiny_root).load(publish_untrained_model(tiny_root, tiny_config()))
    print(f"model {model.version}: dim {model.dim}, {sum(p.numel() for p in model.model.parameters()):,} "
          f"parameters; {a.items:,} catalog items; {a.threads} threads", flush=True)

    rates = {}
    for name, m in (("model", model), ("tiny baseline", tiny)):
        t = time.perf_counter()
        embed_catalog(m, catalog, batch_size=a.batch_size, progress=True)
        rates[name] = a.items / (time.perf_counter() - t)
        print(f"item tower ({name}, dim {m.dim}): {rates[name]:,.0f} items/s", flush=True)
    print(f"ratio model / tiny baseline: {rates['model'] / rates['tiny baseline']:.2f}x")

    torch.set_num_threads(1)  # as served
    lat = []
    for i in range(a.queries):
        t = time.perf_counter()
        model.embed_queries([{"user_id": f"u{i}", "surface": "home", "recent_items": ["i1", "i2"]}])
        lat.append(time.perf_counter() - t)
    print(f"query tower, one query at a time (1 thread): {fmt(latency_summary_ms(lat[50:]))}")
    torch.set_num_threads(a.threads)

    settings = RefresherSettings(registry_root=registry_root, index_root=workdir / "indexes",
                             embed_batch_size=a.batch_size)
    t = time.perf_counter()
    path = build_artifact(model, settings, catalog=catalog, progress=True)
    total = time.perf_counter() - t
    from registry.index_artifact import read_manifest

    m = read_manifest(path)
    print(f"full build of {a.items:,} items: {total:.1f}s (embed {m['embed_seconds']:.1f}s, "
          f"{m['kind']} index {m['build_seconds']:.1f}s, recall@{m['recall_k']} {m['recall']})")
    if not a.registry:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
