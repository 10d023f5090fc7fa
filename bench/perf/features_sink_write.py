"""CPU cost per feature update of the features sink's hot path, without Kafka.

    python -m bench.perf.features_sink_write [--updates 30000] [--store redis|sqlite|both]

Makes the feature updates the streams worker would send for a steady stream of raw events
(users and items drawn uniformly, as in bench.system.pipeline_freshness; the real
`StreamingAggregator` computes them, drained every 0.5 s of events at 5,000 events/s), as wire
JSON. Then, in one process against the real store (Redis at 127.0.0.1:6379, or SQLite):

- decode: JSON -> validated `FeatureUpdate` (`features.sink.worker.decode_records`);
- online write through Feast's own `online_write_batch` (the baseline);
- online write through the fast writer of `features.online.write` (the sink's default);

each in batches of the sink's poll size, newest-per-entity coalesced as the sink does. Prints
µs per update and the fast/Feast ratio.
"""

from __future__ import annotations

import argparse
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import orjson


class Record:  # the fields of an aiokafka ConsumerRecord the sink reads
    __slots__ = ("topic", "partition", "offset", "key", "value")

    def __init__(self, topic: str, value: bytes, offset: int) -> None:
        self.topic, self.partition, self.offset, self.key, self.value = topic, 0, offset, None, value


def worker_updates(n_updates: int, users: int, items: int, rate: int, flush_s: float, seed: int = 0) -> list[bytes]:
    """Wire JSON of the updates the worker's aggregator drains for a uniform event stream."""
    from convcg.contract import Engagement, Impression
    from tests.support.streaming_aggregator import StreamingAggregator

    rng = np.random.default_rng(seed)
    agg, out, t, k = StreamingAggregator(), [], 1_700_000_000.0, 0
    per_flush = max(1, int(rate * flush_s))
    while len(out) < n_updates:
        for _ in range(per_flush):
            u, i = f"u{rng.integers(users)}", f"i{rng.integers(items)}"
            t += 1.0 / rate
            k += 1
            if rng.random() < 0.8:
                ev = Impression(event_id=f"e{k}", impression_id=f"imp{k}", ts=t, user_id=u, item_id=i,
                                advertiser_id=f"a{hash(i) % 50}", surface="home", position=1)
            else:
                ev = Engagement(event_id=f"e{k}", impression_id=f"imp{k - 1}", ts=t, user_id=u, item_id=i,
                                type="click", dwell_ms=5000)
            agg.apply(ev, int(t * 1000))
        out += [orjson.dumps(x) for x in agg.drain()]
    return out[:n_updates]


def time_stage(fn, batches: list, repeat: int = 3) -> float:
    """Best of ``repeat`` passes over all batches: seconds per pass."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            fn(b)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--updates", type=int, default=30_000)
    ap.add_argument("--batch", type=int, default=1000, help="records per poll (the sink's batch_max_records)")
    ap.add_argument("--store", choices=["redis", "sqlite", "both"], default="both")
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    args = ap.parse_args()

    import tempfile

    from convcg.contract import Topics
    from features.online.write import row_writer
    from features.repo.store import apply_repo, delete_redis_project_keys
    from features.settings import FeaturesSettings
    from features.sink.updates import group_by_entity, latest_per_entity
    from features.sink.worker import decode_records

    topics = Topics("")
    wire = worker_updates(args.updates, args.users, args.items, rate=5000, flush_s=0.5)
    records = [Record(topics.feature_updates, v, i) for i, v in enumerate(wire)]
    polls = [records[i:i + args.batch] for i in range(0, len(records), args.batch)]
    n = len(records)
    decoded = [decode_records(p, topics) for p in polls]
    assert not any(b.dead_letters for b in decoded)
    t_decode = time_stage(lambda p: decode_records(p, topics), polls)
    print(f"{n:,} updates ({np.mean([len(v) for v in wire]):.0f} bytes each), polls of {args.batch}")
    print(f"  decode JSON -> FeatureUpdate: {t_decode / n * 1e6:6.1f} µs/update")
    created = datetime.now(timezone.utc)
    grouped = [group_by_entity(latest_per_entity(b.updates)) for b in decoded]

    for kind in (["redis", "sqlite"] if args.store == "both" else [args.store]):
        with tempfile.TemporaryDirectory() as tmp:
            s = FeaturesSettings(repo_dir=Path(tmp) / "feast", project=f"bench{uuid.uuid4().hex[:8]}", online_store=kind)
            store = apply_repo(s)
            try:
                times = {}
                for name, fast in (("Feast online_write_batch", False), ("fast rows (sink default)", True)):
                    writer = row_writer(store, fast=fast)

                    def write(g, w=writer):
                        for entity, ups in g.items():
                            w.write(entity, ups, created)
                    times[name] = time_stage(write, grouped)
                    print(f"  {kind:6s} online write, {name:26s}: {times[name] / n * 1e6:6.1f} µs/update")
                base, fast_t = times.values()
                print(f"  {kind:6s} fast / Feast: {fast_t / base:.2f}x time ({base / fast_t:.1f}x faster); "
                      f"decode + fast write = {(t_decode + fast_t) / n * 1e6:.1f} µs/update "
                      f"-> {n / (t_decode + fast_t):,.0f} updates/s per core")
            finally:
                if kind == "redis":
                    delete_redis_project_keys(s)


if __name__ == "__main__":
    main()
