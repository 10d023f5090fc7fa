"""The sink's offline part files stay few (issue 28, item 9): many small flushes, compacted as the
sink does after each, leave a bounded number of parts, and the offline reads and the point-in-time
training set (``convcg dataset``'s ``build_training_set``) give the same rows as before."""

from __future__ import annotations

import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from convcg.contract import ENTITIES
from features.sink.compaction import runs_to_merge
from features.dataset import build_training_set
from features.repo.definitions import stream_view_name
from features.offline import part_files, read_parts
from features.sink.pending import PendingOffline
from features.sink.worker import FeastWriter
from features.sink.updates import LABEL_SCHEMA, stream_schema
from tests.support.feature_samples import full_update, sample_label
from tests.features.test_dataset import _settings

T = 1_700_000_000.0


def test_only_runs_of_small_parts_are_merged_and_only_past_the_limit():
    sizes = [(Path(f"p{i}"), s) for i, s in enumerate([10, 10, 100, 10, 10, 10, 10, 5, 100, 10])]
    assert runs_to_merge(sizes, max_parts=10, part_bytes=50) == []
    runs = runs_to_merge(sizes, max_parts=4, part_bytes=50)
    # consecutive small parts only (a large part ends a run), each run at most part_bytes
    assert [[p.name for p in run] for run in runs] == [["p0", "p1"], ["p3", "p4", "p5", "p6", "p7"]]


def _flush(writer: FeastWriter, rng, n: int, created: datetime) -> None:
    """One small flush of the sink: a few updates per entity and a few labels."""
    pending = PendingOffline(created=created)
    ups = [full_update(e, f"{e[0]}{rng.integers(5)}", T + float(rng.integers(0, 86400)), n * 10 + k)
           for e in ENTITIES for k in range(3)]
    pending.add(ups, [(0, sample_label(f"imp{n}-{k}", f"u{rng.integers(5)}", f"i{rng.integers(5)}", "a0",
                                       T + float(rng.integers(3600, 86400)))) for k in range(2)], [], 0.0)
    writer.write_offline(pending)
    writer.write_labels(pending)


def _snapshot(s) -> tuple[dict[str, pd.DataFrame], pd.DataFrame]:
    def rows(directory, schema):
        df = read_parts(directory, schema).to_pandas()
        return df.sort_values(list(df.columns[:3])).reset_index(drop=True)

    tables = {e: rows(s.offline_root / stream_view_name(e), stream_schema(e)) for e in ENTITIES}
    tables["labels"] = rows(s.labels_dir, LABEL_SCHEMA)
    frame = build_training_set(s, as_of=datetime.now(timezone.utc), progress=False, write=False, engine="asof").frame
    return tables, frame.sort_values("label_id").reset_index(drop=True)


def _counts(s) -> list[int]:
    return [len(part_files(s.offline_root / stream_view_name(e))) for e in ENTITIES] + [len(part_files(s.labels_dir))]


def test_many_small_flushes_keep_the_part_count_bounded_and_every_row(tmp_path):
    s = _settings(tmp_path, compact_max_parts=6, compact_part_bytes=256 * 1024)
    writer = FeastWriter(s)
    rng = np.random.default_rng(3)
    start = datetime.now(timezone.utc) - timedelta(minutes=30)
    for n in range(40):  # as the sink: flush, then compact
        _flush(writer, rng, n, start + timedelta(seconds=n))
        writer.compact()
        assert max(_counts(s)) <= 7
    compacted = _snapshot(s)
    assert len(compacted[0]["labels"]) == 80 and len(compacted[1]) == 80

    # the same flushes never compacted: the same rows and the same training set
    plain = _settings(tmp_path / "plain", compact_max_parts=6)
    plain_writer = FeastWriter(plain)
    rng = np.random.default_rng(3)
    for n in range(40):
        _flush(plain_writer, rng, n, start + timedelta(seconds=n))
    assert _counts(plain) == [40] * 4
    reference = _snapshot(plain)
    for name, table in reference[0].items():
        pd.testing.assert_frame_equal(compacted[0][name], table)
    pd.testing.assert_frame_equal(compacted[1], reference[1])

    # compacting the uncompacted folder in one go changes no row either
    shutil.rmtree(plain.datasets_dir, ignore_errors=True)
    plain_writer.compact()
    assert max(_counts(plain)) <= 2
    again = _snapshot(plain)
    for name, table in reference[0].items():
        pd.testing.assert_frame_equal(again[0][name], table)
    pd.testing.assert_frame_equal(again[1], reference[1])
