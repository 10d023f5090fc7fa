"""Sink write capacity without Kafka: decode + validate + online write of FeatureUpdate batches
into a real Feast online store, CPU and wall time per batch size (what bounds freshness).

    python bench/bench_features_sink_write.py --store redis --sizes 50 250 1000 5000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections import namedtuple
from pathlib import Path

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Record = namedtuple("Record", "topic partition offset key value")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=["sqlite", "redis"], default="redis")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 250, 1000, 5000])
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    from convcg.contract import Topics
    from features.samples import full_update
    from features.settings import FeaturesSettings
    from features.sink import FeastWriter, decode_records
    from features.store import delete_redis_project_keys

    tmp = Path(tempfile.mkdtemp(prefix="bench-sinkw-"))
    s = FeaturesSettings(repo_dir=tmp / "feast", labels_dir=tmp / "labels", online_store=args.store,
                         project=f"bench{uuid.uuid4().hex[:8]}")
    writer = FeastWriter(s)
    rng = np.random.default_rng(0)
    entities = ("user", "item", "advertiser")
    topics = Topics("")
    print(f"sink write capacity, {args.store} online store (load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    print(f"{'batch':>6} {'cpu ms/batch':>13} {'wall ms/batch':>14} {'updates/s (wall)':>17} {'updates/s per cpu-s':>20}")
    try:
        for n in args.sizes:
            recs = [Record(topics.feature_updates, 0, i, b"k", orjson.dumps(full_update(
                entities[i % 3], f"x{rng.integers(args.entities)}", 1.7e9 + i, i).to_dict())) for i in range(n)]
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(args.repeats):
                writer.write_online(decode_records(recs, topics))
            cpu = (time.process_time() - cpu0) / args.repeats
            wall = (time.perf_counter() - wall0) / args.repeats
            print(f"{n:6d} {cpu * 1000:13.1f} {wall * 1000:14.1f} {n / wall:17.0f} {n / cpu:20.0f}")
    finally:
        if args.store == "redis":
            delete_redis_project_keys(s)


if __name__ == "__main__":
    main()
