"""Event-to-online-feature freshness through the whole path: raw events → `convcg aggregates`
(validation, windows) → feature-update topic → `convcg features sink` → online store, with the
label-join `convcg worker` consuming the same events beside them (as deployed).

    python bench/bench_pipeline_freshness.py [--rate 5000] [--seconds 20] [--store redis]

Starts (or finds) a real broker and the three components as their own processes, then produces
raw impression / engagement events stamped "now" at a steady rate (users and items drawn
uniformly), and meanwhile every ``--probe-ms`` an impression for a fresh user; a poller reads
the online store until that user's ``impressions_1h`` appears. Freshness = visible time -
produce time of the raw event, measured from outside the components. The sink's histogram (raw
event's Kafka timestamp → online write) is scraped and printed beside it, and so is the CPU
each process used. `bench_features_freshness.py` measures the sink's leg alone.
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

from bench_features_freshness import histogram_quantile, scrape_histogram, scrape_sum  # noqa: E402
from freshness_probes import CpuShares, ProbeWatcher, SinkRig, print_probe_summary  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=5000, help="raw events per second")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--probe-ms", type=int, default=100)
    ap.add_argument("--users", type=int, default=20_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--store", choices=["sqlite", "redis"], default="redis")
    ap.add_argument("--without-label-join", action="store_true",
                    help="do not run the label-join worker beside the feature path (it is not on that path, "
                         "but shares the two cores when it runs)")
    ap.add_argument("--linger-ms", type=int, default=5,
                    help="the load producer's linger (librdkafka's default: 5 ms); probes go through it too")
    args = ap.parse_args()

    from convcg.broker import free_port

    worker_port = free_port()
    rig = SinkRig(args.store, "bench-pipe-")
    topics, sink, tmp, sink_port, broker, reader = (rig.topics, rig.sink, rig.tmp, rig.metrics_port, rig.broker,
                                                    rig.reader)
    env = {**rig.env, "CONVCG_STREAMS_BOOTSTRAP": broker.bootstrap, "CONVCG_STREAMS_TOPIC_PREFIX": topics.prefix,
           "CONVCG_STREAMS_APP_ID": f"{topics.prefix}worker", "CONVCG_STREAMS_METRICS_PORT": str(worker_port),
           "CONVCG_STREAMS_DATA_DIR": str(tmp / "streams")}
    worker = None if args.without_label_join else subprocess.Popen(
        [sys.executable, "-m", "loop.cli", "worker"], env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
        stderr=open(tmp / "worker.log", "wb"))
    aggregates = subprocess.Popen([sys.executable, "-m", "loop.cli", "aggregates", "--metrics-port", "0"],
                                  env=env, cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=open(tmp / "aggregates.log", "wb"))
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

    # linger: librdkafka's default 5 ms unless --linger-ms says otherwise. The bundled Tansu's fetch
    # cost grows with the record batches it stores (bench/bench_broker_batches.py), so a shorter
    # linger (more, smaller batches) makes the broker slower the longer a run lasts. Probes go
    # through the same producer as the load, so its linger is part of what they measure.
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
            try:
                return scrape_sum(worker_port, "convcg_stream_events_total") > 0
            except OSError:  # its metrics server is not up yet
                return False

        while not (watcher.fresh and worker_consuming()):
            for proc, name in ((sink, "sink"), (worker, "worker"), (aggregates, "aggregates")):
                if proc is not None and proc.poll() is not None:
                    raise RuntimeError(f"{name} exited: {(tmp / f'{name}.log').read_text()[-2000:]}")
            probe(k)
            k += 1
            fast.flush()
            time.sleep(0.5)
        print(f"components ready after {time.time() - t_warm:.1f}s (group joins + first writes)")
        watcher.reset()
        cpu = CpuShares({"label-join worker": worker.pid if worker else None, "aggregates": aggregates.pid, "sink": sink.pid,
                         "bench (load + probes)": os.getpid(),
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
        for proc in (worker, aggregates):
            if proc is not None:
                proc.terminate()
                proc.wait(30)
        rig.close()

    a = np.array(watcher.fresh)
    beside = "alone" if worker is None else "label-join worker beside"
    print(f"\npipeline freshness (aggregates + sink, {beside}), {args.store} online store, steady {sent / elapsed:.0f} raw "
          f"events/s for {elapsed:.1f}s, producer linger {args.linger_ms} ms ({len(a)} probes; load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
    print_probe_summary("raw event->visible", a, lost)
    print(cpu.summary())
    if count:
        print(f"sink histogram convcg_features_freshness_seconds: {count:.0f} observations, "
              f"p50 <= {histogram_quantile(buckets, 0.5)} s, p99 <= {histogram_quantile(buckets, 0.99)} s")
    p99 = np.percentile(a, 99)
    print(f"target p99 <= 1 s at {args.rate:,} events/s: {p99:.3f} s -> {'MET' if p99 <= 1.0 else 'MISSED'}")


if __name__ == "__main__":
    main()
