"""Event-to-online freshness at a steady event rate (target: p99 <= 1 s at 5,000 events/s).

Starts (or finds) a real broker, runs ``convcg features sink`` as its own process, produces
FeatureUpdate messages at a steady rate for ``--seconds``, and meanwhile sends a probe update
every ``--probe-ms`` (a fresh entity id) whose ``ingest_ms`` is its produce time; a poller reads
the online store until each probe is visible. Freshness = visible time - produce time, measured
end to end from outside the sink. The sink's own Prometheus histogram
(convcg_features_freshness_seconds) is scraped at the end and printed beside it.

    python -m bench.system.features_freshness --rate 5000 --seconds 30 --store sqlite
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import orjson

from bench import ROOT
from bench.rigs.paced import send_paced
from bench.rigs.probes import (
    ProbeWatcher,
    freshness_verdict,
    print_probe_summary,
    print_sink_histogram,
)
from bench.rigs.sink import SinkRig
from convcg.contract import MetricNames
from convcg.metrics_scrape import fetch_samples, histogram_buckets, metric_sum


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000, help="feature-update events per second")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--probe-ms", type=int, default=100)
    ap.add_argument("--entities", type=int, default=20_000)
    ap.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    ap.add_argument("--skew", choices=["uniform", "zipf"], default="uniform",
                    help="which entities the events touch: uniform (worst case for coalescing) or "
                         "power-law popularity (zipf a=1.2, as in the DESIGN's generator)")
    ap.add_argument("--plot", type=Path, default=ROOT / "var" / "bench" / "features_freshness.png")
    args = ap.parse_args()

    from convcg.kafka.io import json_producer
    from tests.support.feature_samples import full_update

    rig = SinkRig(args.store, "bench-fresh-")
    topics, metrics_port = rig.topics, rig.metrics_port
    broker, reader = rig.broker, rig.reader
    producer = json_producer(broker.bootstrap, linger_ms=5)  # as the worker's output producer
    watcher = ProbeWatcher(reader).start()

    def send(u) -> None:
        producer.send(topics.feature_updates, key=u.entity_id.encode(), value=orjson.dumps(u.to_dict()))

    def probe(k: int) -> None:
        now = time.time()
        pid = f"probe-{k}"
        watcher.sent(pid, now)
        send(full_update("user", pid, now, k, ingest_ms=int(now * 1000)))

    try:
        # warm-up: until the sink has joined its group and a probe comes through
        k, t_warm = 0, time.time()
        while not watcher.fresh:
            rig.check_alive()
            probe(k)
            k += 1
            producer.flush()
            time.sleep(0.5)
        print(f"sink ready after {time.time() - t_warm:.1f}s (group join + first write)")
        watcher.reset()
        rng = np.random.default_rng(0)
        entities = ("user", "item", "advertiser")
        placeholder = 9_999_999_999_999  # ingest_ms stamped at send time by a bytes replace
        n_total = int(args.rate * args.seconds)
        payloads = []
        for i in range(n_total):
            e = entities[rng.integers(3)]
            which = rng.integers(args.entities) if args.skew == "uniform" else rng.zipf(1.2) % args.entities
            u = full_update(e, f"{e[0]}{which}", time.time(), i, ingest_ms=placeholder)
            payloads.append((u.entity_id.encode(), orjson.dumps(u.to_dict())))
        marker = str(placeholder).encode()

        def send_due(start: int, end: int) -> None:
            stamp = str(int(time.time() * 1000)).encode()
            for key, raw in payloads[start:end]:
                producer.send(topics.feature_updates, key=key, value=raw.replace(marker, stamp))

        def next_probe() -> None:
            nonlocal k
            probe(k)
            k += 1

        sent, start = send_paced(args.rate, send_due, total=n_total, every_s=args.probe_ms / 1000,
                                 on_every=next_probe)
        producer.flush()
        elapsed = time.perf_counter() - start
        lost = watcher.wait_pending(30)
    finally:
        watcher.stop()
        samples = fetch_samples(metrics_port, timeout=5)
        buckets = histogram_buckets(samples, MetricNames.FEATURE_FRESHNESS)
        busy_s = metric_sum(samples, "convcg_features_sink_batch_seconds_sum")
        written = metric_sum(samples, "convcg_features_sink_updates_total")
        rig.close()

    a = np.array(watcher.fresh)
    print(f"\nfreshness, {args.store} online store, {args.skew} entities, steady {sent / elapsed:.0f} events/s for {elapsed:.1f}s "
          f"({sent} updates + {len(a)} probes; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    print_probe_summary("event->visible", a, lost)
    print_sink_histogram(buckets)
    if busy_s:
        print(f"sink: {written:.0f} updates written in {busy_s:.1f} s of batch work -> capacity "
              f"{written / busy_s:.0f} updates/s while busy (wall time, on the shared cores)")
    p99, met = freshness_verdict(a, lost)
    print(f"target p99 <= 1 s at 5,000 events/s: {p99:.3f} s -> {'MET' if met and sent / elapsed >= 4900 else 'MISSED'}")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        args.plot.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.hist(a * 1000, bins=60)
        ax.axvline(p99 * 1000, color="r", label="p99")
        ax.set_xlabel("event -> visible online (ms)")
        ax.set_ylabel("probes")
        ax.set_title(f"features freshness, {args.store}, {sent / elapsed:.0f} events/s")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot)
        print(f"plot: {args.plot}")
    except Exception as exc:  # plotting is a convenience
        print(f"(no plot: {exc})")


if __name__ == "__main__":
    main()
