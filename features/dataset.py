"""Training sets: labels joined with features as of each label's impression time.

The join itself is Feast's historical retrieval (``FeatureStore.get_historical_features``)
over the same feature view definitions as the live repo, in a scratch repo whose sources are
the *snapshot* of the offline data (see ``features.pit`` for the leak-proof snapshot cut and
the time-sliced pruning that keeps Feast's file-store join small).

Output: one parquet file; the label columns (``convcg.contract.LABEL_FIELDS``) followed by
feature columns named ``<entity>__<feature>`` (``user__ctr_7d``, ``item__price``,
``advertiser__impressions_1d``...). The list features (the user's engagement sequence
``user__last_engaged_items`` / ``user__last_engaged_ts`` / ``user__last_engaged_dwell_ms``) are
kept, as of the impression time like every other feature, so training reads the sequence the
retrieval service reads online (``model.encoding.recent_sequences`` turns them into the
query tower's input, as of each row's impression time). A feature the store had no value for
(no row, or older than the feature TTL) is null.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from convcg.contract import ENTITIES, LABEL_FIELDS
from features import pit
from features.repo.definitions import (
    CATALOG_FEATURES,
    CATALOG_VIEW,
    CREATED_TIMESTAMP,
    EVENT_TIMESTAMP,
    JOIN_KEYS,
    LIST_KINDS,
    VIEW_ENTITY,
    stream_feature_schema,
    stream_view_name,
)
from features.offline import read_parts
from features.settings import FeaturesSettings
from features.sink.updates import LABEL_SCHEMA, stream_schema

log = logging.getLogger(__name__)

DROPPED_KINDS: tuple[str, ...] = ()  # feature kinds left out of training sets (none)


@dataclass
class DatasetResult:
    path: Path | None
    frame: pd.DataFrame
    as_of: datetime
    seconds: float


def training_feature_refs(with_catalog: bool) -> list[str]:
    refs = [f"{stream_view_name(e)}:{n}" for e in ENTITIES
            for n, k in stream_feature_schema(e).items() if k not in DROPPED_KINDS]
    if with_catalog:
        refs += [f"{CATALOG_VIEW}:{n}" for n in CATALOG_FEATURES]
    return refs


def training_column(feast_column: str) -> str:
    """``user_stream__ctr_7d`` -> ``user__ctr_7d``; ``item_catalog__price`` -> ``item__price``."""
    view, feature = feast_column.split("__", 1)
    return f"{VIEW_ENTITY[view]}__{feature}"


def _utc(ts: datetime | pd.Timestamp) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def load_labels(settings: FeaturesSettings, as_of: pd.Timestamp) -> pd.DataFrame:
    labels = read_parts(settings.labels_dir, LABEL_SCHEMA).to_pandas()
    return pit.dedupe_labels(pit.snapshot_cut(labels, as_of)).reset_index(drop=True)


def load_feature_rows(settings: FeaturesSettings, entity: str, as_of: pd.Timestamp) -> pd.DataFrame:
    keep = [JOIN_KEYS[entity], EVENT_TIMESTAMP, CREATED_TIMESTAMP] + [
        n for n, k in stream_feature_schema(entity).items() if k not in DROPPED_KINDS]
    import pyarrow.dataset as pads

    table = read_parts(settings.offline_root / stream_view_name(entity), stream_schema(entity),
                       columns=keep, filter=pads.field(CREATED_TIMESTAMP) <= pa.scalar(
                           as_of.to_pydatetime(), type=pa.timestamp("us", tz="UTC")))
    return table.to_pandas()


def load_catalog(path: Path) -> pd.DataFrame | None:
    if not Path(path).exists():
        log.warning("no item catalog at %s: item__advertiser_id/category/price left out", path)
        return None
    cat = pd.read_parquet(path)
    missing = {"item_id", EVENT_TIMESTAMP} - set(cat.columns)
    if missing:
        raise ValueError(f"catalog {path} misses column(s) {sorted(missing)}")
    out = pd.DataFrame({"item_id": cat["item_id"].astype(str),
                        EVENT_TIMESTAMP: _to_utc_series(cat[EVENT_TIMESTAMP])})
    for name, kind in CATALOG_FEATURES.items():
        if name in cat.columns:
            out[name] = cat[name].astype(str) if kind == "string" else cat[name].astype(float)
        else:
            out[name] = None if kind == "string" else float("nan")
    return out


def _to_utc_series(s: pd.Series) -> pd.Series:
    if pd.api.types.is_numeric_dtype(s):
        return pd.to_datetime(s, unit="s", utc=True)
    return pd.to_datetime(s, utc=True)


class ScratchRepo:
    """A throw-away Feast repo with the live definitions, sourced from slice files."""

    def __init__(self, settings: FeaturesSettings, with_catalog: bool):
        from features.repo.store import apply_repo

        self.dir = Path(tempfile.mkdtemp(prefix="convcg-dataset-"))
        self.with_catalog = with_catalog
        self.settings = settings.model_copy(update=dict(
            repo_dir=self.dir / "feast", registry_path=None, sqlite_path=None, offline_dir=self.dir / "src",
            online_store="sqlite", catalog_path=self.dir / "catalog.parquet", project="convcg_dataset"))
        self.store = apply_repo(self.settings)

    def write_source(self, view: str, frame: pd.DataFrame) -> None:
        if view == CATALOG_VIEW:
            frame.to_parquet(self.settings.catalog_path, index=False)
            return
        directory = self.settings.offline_root / view
        for old in directory.glob("*.parquet"):
            old.unlink()
        frame.to_parquet(directory / "part-slice.parquet", index=False)

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def build_training_set(settings: FeaturesSettings, as_of: datetime | None = None,
                       out_path: Path | None = None, progress: bool = True,
                       write: bool = True, engine: str | None = None) -> DatasetResult:
    """Labels ingested by ``as_of`` (default: now - ``dataset_as_of_lag_seconds``) joined
    point-in-time with feature rows ingested by ``as_of``; written to ``out_path`` (default
    under ``datasets_dir``). ``engine``: ``feast`` (Feast's historical retrieval, sliced),
    ``asof`` (the same rule as one merge_asof per view; see ``pit.asof_join``) or ``auto``."""
    t0 = time.perf_counter()
    if as_of is None:
        as_of = datetime.now(timezone.utc) - timedelta(seconds=settings.dataset_as_of_lag_seconds)
    snap = _utc(as_of)
    labels = load_labels(settings, snap)
    rows = {e: load_feature_rows(settings, e, snap) for e in ENTITIES}
    catalog = load_catalog(settings.catalog_path)
    log.info("dataset as of %s: %d labels; feature rows %s; catalog %s", snap.isoformat(),
             len(labels), {e: len(r) for e, r in rows.items()}, None if catalog is None else len(catalog))

    labels[EVENT_TIMESTAMP] = pd.to_datetime(labels["impression_ts"], unit="s", utc=True)
    labels = labels.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    refs = training_feature_refs(catalog is not None)
    views = view_refs(refs)

    engine = engine or settings.dataset_engine
    if engine == "auto":
        engine = "feast" if len(labels) <= settings.dataset_feast_max_labels else "asof"
        if engine == "asof":
            log.info("%d labels > dataset_feast_max_labels=%d: using the merge_asof engine (same "
                     "rule; Feast's file-store join is quadratic per hot key)", len(labels),
                     settings.dataset_feast_max_labels)
    joined: dict[str, list[pd.DataFrame]] = {v: [] for v in views}
    if len(labels) and engine == "asof":
        for view, view_feature_refs in views.items():
            entity, key = VIEW_ENTITY[view], JOIN_KEYS[VIEW_ENTITY[view]]
            source = catalog if view == CATALOG_VIEW else rows[entity]
            ttl = None if view == CATALOG_VIEW or not settings.feature_ttl_days else pd.Timedelta(days=settings.feature_ttl_days)
            joined[view].append(pit.asof_join(labels, source, key, [r.split(":", 1)[1] for r in view_feature_refs],
                                              ttl, prefix=view))
    elif len(labels):
        repo = ScratchRepo(settings, catalog is not None)
        try:
            if catalog is not None:
                repo.write_source(CATALOG_VIEW, catalog)
            slices = pit.time_slices(labels[EVENT_TIMESTAMP], settings.dataset_slice_rows)
            for start, stop in tqdm(slices, desc="point-in-time join", unit="slice", disable=not progress):
                chunk = labels.iloc[start:stop]
                a, b = chunk[EVENT_TIMESTAMP].iloc[0], chunk[EVENT_TIMESTAMP].iloc[-1]
                for view, view_feature_refs in views.items():
                    key = JOIN_KEYS[VIEW_ENTITY[view]]
                    if view != CATALOG_VIEW:
                        entity = VIEW_ENTITY[view]
                        repo.write_source(view, pit.prune_for_slice(rows[entity], key, chunk[key].unique(), a, b))
                    joined[view].append(repo.store.get_historical_features(
                        entity_df=chunk[[key, EVENT_TIMESTAMP]].drop_duplicates(),
                        features=view_feature_refs, full_feature_names=True).to_df())
        finally:
            repo.close()
    frame = _assemble(labels, joined, views)
    result = DatasetResult(path=None, frame=frame, as_of=snap.to_pydatetime(), seconds=time.perf_counter() - t0)
    if write:
        result.path = write_dataset(frame, out_path or settings.datasets_dir / f"train-{snap.strftime('%Y%m%dT%H%M%S')}.parquet", snap)
    log.info("training set (%s engine): %d rows x %d columns in %.1fs%s", engine, len(frame), frame.shape[1],
             result.seconds, f" -> {result.path}" if result.path else "")
    return result


def view_refs(refs: list[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in refs:
        out.setdefault(r.split(":", 1)[0], []).append(r)
    return out


def _assemble(labels: pd.DataFrame, joined: dict[str, list[pd.DataFrame]],
              views: dict[str, list[str]]) -> pd.DataFrame:
    """Label columns plus each view's features, matched on (join key, impression time).

    Feast is asked one feature view at a time with unique (key, time) pairs: its file-store
    join deduplicates on all join keys + time (two labels of one user at one instant would
    collapse) and drops an entity row when every candidate of one view is newer than it, which
    would blank the other views' values of that row. A pair Feast returns nothing for gets nulls.
    """
    frame = labels[[*LABEL_FIELDS, EVENT_TIMESTAMP]]
    for view, refs in views.items():
        key = JOIN_KEYS[VIEW_ENTITY[view]]
        cols = [r.replace(":", "__") for r in refs]
        if joined.get(view):
            feats = pd.concat(joined[view], ignore_index=True)[[key, EVENT_TIMESTAMP, *cols]]
            feats[EVENT_TIMESTAMP] = feats[EVENT_TIMESTAMP].astype(frame[EVENT_TIMESTAMP].dtype)
            frame = frame.merge(feats, on=[key, EVENT_TIMESTAMP], how="left", validate="many_to_one")
        else:
            frame = frame.assign(**{c: pd.Series(dtype="float64") for c in cols})
    frame = frame.drop(columns=[EVENT_TIMESTAMP]).reset_index(drop=True)
    frame = frame.rename(columns={c: training_column(c) for c in frame.columns if "__" in c})
    for column in list_columns(frame.columns):  # no row: None, whatever the join filled in (NaN)
        frame[column] = [list(v) if isinstance(v, (list, tuple, np.ndarray)) else None for v in frame[column]]
    return frame


def list_columns(columns) -> list[str]:
    """The training-set columns of list features (``user__last_engaged_items``...)."""
    lists = {f"{e}__{n}" for e in ENTITIES for n, k in stream_feature_schema(e).items() if k in LIST_KINDS}
    return [c for c in columns if c in lists]


def write_dataset(frame: pd.DataFrame, path: Path, as_of: pd.Timestamp) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {b"convcg.dataset": json.dumps({"as_of": as_of.isoformat(), "rows": len(frame)}).encode()}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, path)
    return path
