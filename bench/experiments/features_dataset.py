"""Point-in-time training set build: time and peak memory (target: 1M labels < 2 min, < 4 GB).

Generates a seeded offline store (labels table, streaming feature rows for users / items /
advertisers with ingestion times, an item catalog), then runs ``convcg dataset`` as its own
process and reports wall time and the child's peak RSS. A sample of output rows is checked
against a pandas ``merge_asof`` reference so a fast-but-wrong build cannot pass.

    python -m bench.experiments.features_dataset --labels 1000000
    python -m bench.experiments.features_dataset --labels 50000 --users 5000 --items 2000   # quick
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from bench import ROOT
from loop.supervisor import Component

DAY = 86400.0
T0 = 1_700_000_000.0


def power_law(rng, n_ids: int, size: int, exponent: float = 0.8) -> np.ndarray:
    """Ids drawn with popularity ~ 1 / rank^exponent (top id ~2% of draws at 50k ids)."""
    p = 1.0 / np.arange(1, n_ids + 1) ** exponent
    return rng.choice(n_ids, size=size, p=p / p.sum())


def generate(root: Path, args, rng) -> dict:
    from features.offline import write_part
    from features.repo.definitions import JOIN_KEYS, stream_feature_schema, stream_view_name
    from features.sink.updates import LABEL_SCHEMA, stream_schema

    span = args.days * DAY
    created = pd.Timestamp(T0 + span + DAY, unit="s", tz="UTC")
    counts = {"user": args.users, "item": args.items, "advertiser": args.advertisers}
    rows_per = {"user": args.feature_rows, "item": args.feature_rows, "advertiser": args.feature_rows // 4}
    feature_frames = {}
    for e, n_ids in counts.items():
        n = rows_per[e]
        ids = power_law(rng, n_ids, n)
        cols = {JOIN_KEYS[e]: pa.array([f"{e[0]}{i}" for i in ids]),
                "event_timestamp": pa.array(pd.to_datetime(((T0 + rng.uniform(0, span, n)) * 1e6).astype(np.int64), unit="us", utc=True)),
                "created": pa.array(pd.Series([created] * n))}
        for name, kind in stream_feature_schema(e).items():
            if kind == "int":
                cols[name] = pa.array(rng.integers(0, 1000, n))
            elif kind == "float":
                cols[name] = pa.array(rng.uniform(0, 1, n))
            else:
                cols[name] = pa.array([["i1", "i2"]] * n, type=pa.list_(pa.string()))
        table = pa.table(cols).cast(stream_schema(e))
        for part in range(0, n, 200_000):  # the sink writes many parts
            write_part(root / "feast" / "offline" / stream_view_name(e), table.slice(part, 200_000))
        feature_frames[e] = table.select([JOIN_KEYS[e], "event_timestamp", "impressions_1h"]).to_pandas()
    n = args.labels
    users = power_law(rng, args.users, n)
    items = power_law(rng, args.items, n)
    advertisers = items % args.advertisers  # popular items are spread over advertisers
    lab = {
        "label_id": [f"imp{i}:negative" for i in range(n)], "impression_id": [f"imp{i}" for i in range(n)],
        "user_id": [f"u{i}" for i in users], "item_id": [f"i{i}" for i in items],
        "advertiser_id": [f"a{i}" for i in advertisers], "surface": ["home"] * n, "kind": ["negative"] * n,
        "impression_ts": T0 + rng.uniform(0, span, n)}
    lab["label_ts"] = lab["impression_ts"] + 3600
    lab.update(conversion_value=np.zeros(n), engagement_weight=np.zeros(n), conversion=np.zeros(n, dtype=np.int64),
               engagement=np.zeros(n, dtype=np.int64), position=rng.integers(0, 20, n),
               created=pd.Series([created] * n))
    labels = pa.table({k: pa.array(lab[k]) for k in LABEL_SCHEMA.names}).cast(LABEL_SCHEMA)
    for part in range(0, n, 250_000):
        write_part(root / "labels", labels.slice(part, 250_000))
    catalog = pd.DataFrame({"item_id": [f"i{i}" for i in range(args.items)],
                            "advertiser_id": [f"a{i % args.advertisers}" for i in range(args.items)],
                            "category": [f"c{i % 30}" for i in range(args.items)],
                            "price": rng.uniform(1, 300, args.items),
                            "event_timestamp": pd.Timestamp(T0 - DAY, unit="s", tz="UTC")})
    (root / "catalog").mkdir(parents=True, exist_ok=True)
    catalog.to_parquet(root / "catalog" / "items.parquet")
    return feature_frames


def check_sample(out: pd.DataFrame, feature_frames: dict, ttl_s: float, rng, n: int = 2000) -> int:
    """Rows whose user/item/advertiser impressions_1h differs from a merge_asof reference."""
    sample = out.iloc[rng.choice(len(out), size=min(n, len(out)), replace=False)].copy()
    sample["t"] = pd.to_datetime(sample["impression_ts"], unit="s", utc=True)
    sample = sample.sort_values("t")
    bad = 0
    for e, frame in feature_frames.items():
        key = f"{e}_id"
        ref = frame.rename(columns={"impressions_1h": "want"}).sort_values("event_timestamp")
        ref["event_timestamp"] = ref["event_timestamp"].astype(sample["t"].dtype)
        m = pd.merge_asof(sample[[key, "t", f"{e}__impressions_1h"]], ref, left_on="t", right_on="event_timestamp",
                          by=key, direction="backward", tolerance=pd.Timedelta(seconds=ttl_s))
        got, want = m[f"{e}__impressions_1h"], m["want"]
        bad += int((~((got == want) | (got.isna() & want.isna()))).sum())
    return bad


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--items", type=int, default=50_000)
    ap.add_argument("--advertisers", type=int, default=1_000)
    ap.add_argument("--feature-rows", type=int, default=1_000_000, help="rows per user/item view (advertiser: 1/4)")
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--slice-rows", type=int, default=None, help="CONVCG_FEATURES_DATASET_SLICE_ROWS")
    ap.add_argument("--keep", action="store_true", help="keep the generated data directory")
    ap.add_argument("--engine", choices=["feast", "asof"], nargs="+", default=["asof", "feast"],
                    help="join engines to run on the same data (feast is quadratic per hot key: use small sizes)")
    args = ap.parse_args()

    rng = np.random.default_rng(42)
    root = Path(tempfile.mkdtemp(prefix="bench-dataset-"))
    t0 = time.perf_counter()
    frames = generate(root, args, rng)
    print(f"generated {args.labels} labels, feature rows {{k: len(v)}} = "
          f"{ {k: len(v) for k, v in frames.items()} } in {time.perf_counter() - t0:.1f}s under {root}")
    env = {"CONVCG_FEATURES_REPO_DIR": str(root / "feast"), "CONVCG_FEATURES_LABELS_DIR": str(root / "labels"),
           "CONVCG_FEATURES_CATALOG_PATH": str(root / "catalog" / "items.parquet"),
           "CONVCG_FEATURES_DATASETS_DIR": str(root / "datasets")}
    if args.slice_rows:
        env["CONVCG_FEATURES_DATASET_SLICE_ROWS"] = str(args.slice_rows)
    for engine in args.engine:
        out = root / "datasets" / f"train-{engine}.parquet"
        t1 = time.perf_counter()
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        build = Component(f"dataset-{engine}", ["dataset", "--out", str(out), "--engine", engine], env,
                          root / f"dataset-{engine}.log", cwd=ROOT).start()
        returncode = build.wait()
        wall = time.perf_counter() - t1
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024 / 1024
        if returncode != 0:
            raise SystemExit(f"convcg dataset --engine {engine} failed:\n{build.tail(60)}")
        result = pd.read_parquet(out)
        bad = check_sample(result, frames, 30 * DAY, rng)
        print(f"\n[{engine}] point-in-time training set: {len(result)} rows x {result.shape[1]} cols in {wall:.1f}s "
              f"({len(result) / wall:.0f} rows/s), peak RSS {peak_gb:.2f} GB"
              f"{' (max over runs so far: RUSAGE_CHILDREN)' if before else ''} "
              f"(load avg {os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus)")
        print(f"[{engine}] sample check vs merge_asof reference: {bad} mismatching cells in 3 x {min(2000, len(result))} checked")
        if args.labels >= 1_000_000:
            print(f"[{engine}] target 1M rows < 120 s and < 4 GB: {wall:.1f} s, {peak_gb:.2f} GB -> "
                  f"{'MET' if wall < 120 and peak_gb < 4 and bad == 0 else 'MISSED'}")
    if not args.keep:
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
