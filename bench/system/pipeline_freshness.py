"""Event-to-online-feature freshness through the whole path: raw events → `convcg aggregates`
(validation, windows) → feature-update topic → `convcg features sink` → online store, with the
label-join `convcg worker` consuming the same events beside them (as deployed).

    python -m bench.system.pipeline_freshness [--rate 5000] [--seconds 20] [--store default|sqlite|redis]

``--store default`` is the online store `convcg up` runs on (``loop.online_store``: a private
redis-server started for the run when the binary is on PATH, else SQLite); ``redis`` is an
external Redis at ``CONVCG_FEATURES_REDIS_CONNECTION``.

Starts (or finds) a real broker and the three components as their own processes, then produces
raw impression / engagement events stamped "now" at a steady rate (users and items drawn
uniformly), and meanwhile every ``--probe-ms`` an impression for a fresh user; a poller reads
the online store until that user's ``impressions_1h`` appears. Freshness = visible time -
produce time of the raw event, measured from outside the components. The sink's histogram (raw
event's Kafka timestamp → online write) is scraped and printed beside it, and so is the CPU
each process used. `bench.system.features_freshness` measures the sink's leg alone.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import orjson

from bench.rigs.paced import send_paced
from bench.rigs.probes import (
    CpuShares,
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
    ap.add_argument("--rate", type=int, default=5000, help="raw events per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--probe-ms", type=int, default=100)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--store", choices=["default", "sqlite", "redis"], default="default")
    ap.add_argument("--without-label-join", action="store_true",
                    help="do not run the label-join worker beside the feature path (it is not on that path, "
                         "but shares the two cores when it runs)")
    ap.add_argument("--linger-ms", type=int, default=5,
                    help="the load producer's linger (librdkafka's default); probes go through it too")
    args = ap.parse_args()

    from convcg.kafka.broker import free_port

    worker_port = free_port()
    private = None
    if args.store == "default":
        import tempfile

        from loop.online_store import start_online_store

        private = start_online_store("auto", Path(tempfile.mkdtemp(prefix="bench-pipe-store-")))
        args.store = f"default ({private.describe()})"
    kind = private.kind if private else args.store
    rig = SinkRig(kind, "bench-pipe-", redis_connection=private.server.connection if private and private.server else None)
    topics, sink, tmp, sink_port, broker, reader = (rig.topics, rig.sink, rig.tmp, rig.metrics_port, rig.broker,
                                                    rig.reader)
    env = {"CONVCG_STREAMS_KAFKA__BOOTSTRAP": broker.bootstrap, "CONVCG_STREAMS_KAFKA__TOPIC_PREFIX": topics.prefix,
           "CONVCG_STREAMS_APP_ID": f"{topics.prefix}worker", "CONVCG_STREAMS_METRICS_PORT": str(worker_port),
           "CONVCG_STREAMS_DATA_DIR": str(tmp / "streams")}
    worker = None if args.without_label_join else rig.start("worker", ["worker"], env)
    aggregates = rig.start("aggregates", ["aggregates", "--metrics-port", "0"], env)
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

    # Probes go through the same producer as the load, so its linger is part of what they measure.
    fast = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": args.linger_ms})

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
        # warm-up: the sink's group join and first writes, and the label-join worker consuming
        def worker_consuming() -> bool:
            if worker is None:
                return True
            # its metrics server may not be up yet
            return metric_sum(fetch_samples(worker_port, missing_ok=True), "convcg_stream_events_total") > 0

        while not (watcher.fresh and worker_consuming()):
            rig.check_alive()
            probe(k)
            k += 1
            fast.flush()
            time.sleep(0.5)
        print(f"components ready after {time.time() - t_warm:.1f}s (group joins + first writes)")
        watcher.reset()
        cpu = CpuShares({"label-join worker": worker.pid if worker else None, "aggregates": aggregates.pid, "sink": sink.pid,
                         "bench (load + probes)": os.getpid(),
                         "broker": broker.process.pid if broker.process else None,
                         "redis": (private.server.process.pid if private and private.server
                                   else CpuShares.redis_pid() if kind == "redis" else None)})
        cpu.start()

        def send_due(start: int, end: int) -> None:
            stamp = orjson.dumps(time.time())
            for topic, key, value in load[start:end]:
                fast.produce(topic, value.replace(marker, stamp), key)
            fast.poll(0)

        def next_probe() -> None:
            nonlocal k
            probe(k)
            k += 1

        sent, start = send_paced(args.rate, send_due, total=n_total, every_s=args.probe_ms / 1000,
                                 on_every=next_probe)
        fast.flush()
        elapsed = time.perf_counter() - start
        cpu.stop()
        lost = watcher.wait_pending(30)
    finally:
        watcher.stop()
        buckets = histogram_buckets(fetch_samples(sink_port, timeout=5), MetricNames.FEATURE_FRESHNESS)
        rig.close()
        if private is not None:
            private.stop()

    a = np.array(watcher.fresh)
    beside = "alone" if worker is None else "label-join worker beside"
    print(f"\npipeline freshness (aggregates + sink, {beside}), {args.store} online store, steady {sent / elapsed:.0f} raw "
          f"events/s for {elapsed:.1f}s, producer linger {args.linger_ms} ms ({len(a)} probes; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    print_probe_summary("raw event->visible", a, lost)
    print(cpu.summary())
    print_sink_histogram(buckets)
    p99, met = freshness_verdict(a, lost)
    print(f"target p99 <= 1 s at {args.rate:,} events/s: {p99:.3f} s -> {'MET' if met else 'MISSED'}")


if __name__ == "__main__":
    main()
