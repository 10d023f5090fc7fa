"""Benchmark: StreamingAggregator.apply / drain cost per event on a synthetic log.

Prints µs per event (CPU time of this process, and wall time, since the machine is shared)
for apply alone, for apply + a drain every BATCH events (as the worker does per batch), and a
baseline in the same run: a bare loop that bumps one dict counter per event. Then, for the
`convcg aggregates` flush intervals, the entity updates it sends per second at a steady RATE
events/s (what the features sink has to write: fewer, the longer updates coalesce).
Target: apply well under 10 µs/event; the worker needs >= 20,000 events/s overall.

    python -m bench.perf.aggregates [--impressions N] [--batch B] [--rate 5000]
"""

from __future__ import annotations

import argparse
import time

from streams.replay.datasets import load_log
from tests.support.streaming_aggregator import StreamingAggregator

TARGET_EVENTS_PER_S = 20_000


class Clock:
    def __enter__(self) -> "Clock":
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu

    def per(self, n: int) -> str:
        return f"{self.cpu / n * 1e6:7.2f} µs cpu {self.wall / n * 1e6:7.2f} µs wall"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--impressions", type=int, default=300_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=5000, help="events between drains (worker batch)")
    ap.add_argument("--days", type=float, default=14.0)
    ap.add_argument("--rate", type=int, default=5000, help="steady events/s for the updates-out table")
    ap.add_argument("--flush-s", type=float, nargs="+", default=[0.1, 0.2, 0.5, 1.0],
                    help="flush intervals of convcg aggregates to compare (0.1 s is the default)")
    args = ap.parse_args()

    log = load_log("synthetic", n_users=args.users, n_items=args.items, n_advertisers=500,
                   n_impressions=args.impressions, seed=0, days=args.days)
    events = log.events
    n = len(events)
    print(f"events: {n} ({log.counts()}) users={args.users} items={args.items} days={args.days}")

    with Clock() as baseline:
        counter: dict[str, int] = {}
        for e in events:
            counter[e.user_id] = counter.get(e.user_id, 0) + 1

    agg = StreamingAggregator()
    with Clock() as apply_only:
        for e in events:
            agg.apply(e, 0)
    with Clock() as final_drain:
        final = agg.drain()

    agg = StreamingAggregator()
    apply_ = agg.apply
    updates = 0
    with Clock() as with_drains:
        for k in range(0, n, args.batch):
            for e in events[k:k + args.batch]:
                apply_(e, 0)
            updates += len(agg.drain())

    print(f"baseline (one dict bump per event): {baseline.per(n)}")
    print(f"apply only:                         {apply_only.per(n)}  "
          f"({n / apply_only.cpu:,.0f} events/s cpu, {apply_only.cpu / baseline.cpu:.1f}x baseline)")
    print(f"one final drain:                    {final_drain.per(len(final))} per update ({len(final)} updates)")
    print(f"apply + drain every {args.batch} events:   {with_drains.per(n)}  "
          f"({n / with_drains.cpu:,.0f} events/s cpu, {n / with_drains.wall:,.0f} wall; "
          f"{updates} updates = {updates / n:.2f} per event)")
    ok = n / with_drains.cpu >= TARGET_EVENTS_PER_S
    print(f"target >= {TARGET_EVENTS_PER_S:,} events/s (apply + drains, cpu): {'met' if ok else 'NOT met'}")

    print(f"entity updates sent at a steady {args.rate:,} events/s, by flush interval:")
    for flush_s in args.flush_s:
        per_flush = max(1, int(args.rate * flush_s))
        agg, out = StreamingAggregator(), 0
        for k in range(0, n, per_flush):
            for e in events[k:k + per_flush]:
                agg.apply(e, 0)
            out += len(agg.drain())
        print(f"  flush every {flush_s:4.1f} s: {out / n * args.rate:8,.0f} updates/s ({out / n:.2f} per event)")


if __name__ == "__main__":
    main()
