"""Event-to-online-feature freshness through the whole path: raw events → streams worker
(validation, aggregates) → feature-update topic → features sink → online store.

    python bench/bench_pipeline_freshness.py [--rate 5000] [--seconds 20] [--store redis]

Starts (or finds) a real broker, a `convcg worker` and a `convcg features sink` as their own
processes, then produces raw impression / engagement events stamped "now" at a steady rate
(users and items drawn uniformly), and meanwhile every ``--probe-ms`` an impression for a fresh
user; a poller reads the online store until that user's ``impressions_1h`` appears. Freshness =
visible time - produce time of the raw event, measured from outside both components. The sink's
histogram (raw event's Kafka timestamp → online write) is scraped and printed beside it.
`bench_features_freshness.py` measures the sink's leg alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_features_freshness import histogram_quantile, scrape_histogram  # noqa: E402
from freshness_probes import CpuShares, ProbeWatcher, SinkRig, print_probe_summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000, help="raw events per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--probe-ms", type=int, default=100)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--store", choices=["sqlite", "redis"], default="redis")
    args = ap.parse_args()

    from convcg.broker import free_port

    worker_port = free_port()
    rig = SinkRig(args.store, "bench-pipe-")
    topics, sink, tmp, sink_port, broker, reader = (rig.topics, rig.sink, rig.tmp, rig.metrics_port, rig.broker,
                                                    rig.reader)
    env = {**rig.env, "CONVCG_STREAMS_BOOTSTRAP": broker.bootstrap, "CONVCG_STREAMS_TOPIC_PREFIX": topics.prefix,
           "CONVCG_STREAMS_APP_ID": f"{topics.prefix}worker", "CONVCG_STREAMS_METRICS_PORT": str(worker_port),
           "CONVCG_STREAMS_DATA_DIR": str(tmp / "streams")}
    worker = subprocess.Popen([sys.executable, "-m", "convcg.cli", "worker"], env=env, cwd=ROOT,
                              stdout=subprocess.DEVNULL, stderr=open(tmp / "worker.log", "wb"))
    watcher = ProbeWatcher(reader).start()
    seq = iter(range(10**12))

    def impression(user: str, item: str, now: float) -> tuple[str, bytes, bytes]:
        n = next(seq)
        body = {"event_id": f"bi-{n}", "impression_id": f"imp-{n}", "ts": now, "user_id": user, "item_id": item,
                "advertiser_id": f"a{hash(item) % 50}", "surface": "home", "position": 1}
        return topics.impressions, user.encode(), orjson.dumps(body)

    def engagement(user: str, item: str, now: float) -> tuple[str, bytes, bytes]:
        n = next(seq)
        body = {"event_id": f"be-{n}", "impression_id": f"imp-{n - 1}", "ts": now, "user_id": user,
                "item_id": item, "type": "click", "dwell_ms": 5000}
        return topics.engagements, user.encode(), orjson.dumps(body)

    # The load is made before the clock starts and sent with librdkafka, so the generator takes
    # as little of the two cores as it can (in production it is not on the worker's machine).
    from confluent_kafka import Producer

    # linger 5 ms: librdkafka's default, as an ad server's producer would run. (2 ms, used before,
    # makes ~2.5x more record batches, and the bundled Tansu's fetch cost grows with the batches
    # it stores: bench/bench_broker_batches.py.) Probes go through the same producer as the load.
    fast = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})

    def probe(k: int) -> None:
        now = time.time()
        user = f"probe-{k}"
        watcher.sent(user, now)
        topic, key, value = impression(user, "i0", now)
        fast.produce(topic, value, key)

    rng = np.random.default_rng(0)
    n_total = int(args.rate * args.seconds)
    placeholder = 9999999999.0  # stamped with the send time by a bytes replace
    users, items = rng.integers(args.users, size=n_total), rng.integers(args.items, size=n_total)
    kinds = rng.random(n_total) < 0.8
    load = [(impression if kinds[i] else engagement)(f"u{users[i]}", f"i{items[i]}", placeholder)
            for i in range(n_total)]
    marker = orjson.dumps(placeholder)
    sent, elapsed, lost = 0, 0.0, 0
    try:
        k, t_warm = 0, time.time()
        while not watcher.fresh:  # warm-up: both group joins, first writes
            for proc, name in ((sink, "sink"), (worker, "worker")):
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            probe(k)
            k += 1
            fast.flush()
            time.sleep(0.5)
        print(f"worker and sink ready after {time.time() - t_warm:.1f}s (group joins + first writes)")
        watcher.reset()
        cpu = CpuShares({"worker": worker.pid, "sink": sink.pid, "bench (load + probes)": os.getpid(),
                         "broker": broker.process.pid if broker.process else None,
                         "redis": CpuShares.redis_pid() if args.store == "redis" else None})
        cpu.start()
        tick = 0.005
        start = time.perf_counter()
        next_probe = start
        while sent < n_total:
            now = time.perf_counter()
            due = max(0, min(n_total, int((now - start) * args.rate)) - sent)
            stamp = orjson.dumps(time.time())
            for topic, key, value in load[sent:sent + due]:
                fast.produce(topic, value.replace(marker, stamp), key)
            fast.poll(0)
            sent += due
            if now >= next_probe:
                probe(k)
                k += 1
                next_probe += args.probe_ms / 1000
            time.sleep(max(0.0, tick - (time.perf_counter() - now)))
        fast.flush()
        elapsed = time.perf_counter() - start
        cpu.stop()
        lost = watcher.wait_pending(30)
    finally:
        watcher.stop()
        buckets, count = scrape_histogram(sink_port, "convcg_features_freshness_seconds")
        worker.terminate()
        worker.wait(30)
        rig.close()

    a = np.array(watcher.fresh)
    print(f"\npipeline freshness (worker + sink), {args.store} online store, steady {sent / elapsed:.0f} raw "
          f"events/s for {elapsed:.1f}s ({len(a)} probes; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    print_probe_summary("raw event->visible", a, lost)
    print(cpu.summary())
    if count:
        print(f"sink histogram convcg_features_freshness_seconds: {count:.0f} observations, "
              f"p50 <= {histogram_quantile(buckets, 0.5)} s, p99 <= {histogram_quantile(buckets, 0.99)} s")
    p99 = np.percentile(a, 99)
    print(f"target p99 <= 1 s at {args.rate:,} events/s: {p99:.3f} s -> {'MET' if p99 <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
