"""The features sink remembers label ids for its dedupe horizon only: bounded memory while it
runs, only the newest horizon loaded from the label table at start, redeliveries within the
horizon still dropped after a restart (real Feast SQLite store, real parquet label table)."""

from __future__ import annotations

import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest

from features import metrics
from features.offline import read_parts, write_part
from features.settings import FeaturesSettings
from features.sink.pending import PendingOffline
from features.sink.updates import LABEL_SCHEMA, labels_table
from features.sink.worker import FeastWriter
from tests.support.feature_samples import sample_label

DAY = 86400.0
T = 1_700_000_000.0
PER_DAY = 2000
DAYS = 10


def _settings(tmp_path: Path, **kw) -> FeaturesSettings:
    return FeaturesSettings(repo_dir=tmp_path / "feast", labels_dir=tmp_path / "labels",
                            project=f"t{uuid.uuid4().hex[:10]}", dedupe_horizon_s=DAY, **kw)


def _history() -> list[tuple[int, object]]:
    """(partition, label) of DAYS days of labels in time order over 3 partitions."""
    return [(i % 3, sample_label(f"imp{i}", f"u{i % 50}", "i1", "a1", T + i * DAY / PER_DAY))
            for i in range(DAYS * PER_DAY)]


def _flush(writer: FeastWriter, pairs) -> None:
    writer.write_labels(PendingOffline(labels=list(pairs), created=datetime.now(timezone.utc)))


def _stored(settings: FeaturesSettings) -> int:
    return read_parts(settings.labels_dir, LABEL_SCHEMA, columns=["label_id"]).num_rows


def _count(result: str) -> float:
    return metrics.SINK_LABELS.labels(result)._value.get()


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A writer fed DAYS days of labels flush by flush, the largest seen-set it held, and its settings."""
    settings = _settings(tmp_path_factory.mktemp("sink"))
    writer = FeastWriter(settings)
    history = _history()
    largest = 0
    for start in range(0, len(history), 250):
        _flush(writer, history[start:start + 250])
        largest = max(largest, len(writer.seen_label_ids))
    return writer, largest, settings, history


def test_the_sinks_label_ids_stay_bounded_by_the_horizon_as_time_advances(written):
    writer, largest, settings, history = written
    assert _stored(settings) == len(history)  # every label written once
    bound = 4 * PER_DAY + 2048  # about two horizons of ids, plus the pruning slack
    assert len(history) > bound  # the history is larger than what may be held
    assert largest <= bound
    assert history[0][1].label_id not in writer.seen_label_ids  # days behind every partition: forgotten
    # every id of the last horizon is still remembered: redelivering that day writes nothing
    last_day = history[-PER_DAY:]
    duplicates = _count("duplicate")
    _flush(writer, last_day)
    assert _stored(settings) == len(history)
    assert _count("duplicate") - duplicates == len(last_day)


def test_a_restarted_sink_loads_only_the_newest_horizon_and_still_drops_its_redeliveries(written):
    _, _, settings, history = written
    newest = max(lab.label_ts for _, lab in history)
    within = [lab.label_id for _, lab in history if lab.label_ts >= newest - DAY]
    restarted = FeastWriter(settings)
    assert len(restarted.seen_label_ids) == len(within)  # only those within the horizon...
    assert all(label_id in restarted.seen_label_ids for label_id in within)  # ...and all of them
    oldest_partition, oldest = history[0]
    assert oldest.label_id not in restarted.seen_label_ids  # far older than the horizon: not loaded

    stored, duplicates = _stored(settings), _count("duplicate")
    _flush(restarted, [history[-5], history[-PER_DAY // 2]])  # redeliveries inside the horizon
    assert _stored(settings) == stored and _count("duplicate") - duplicates == 2

    # once its partition has moved on, a redelivery far older than the horizon is refused, not written
    new = sample_label("imp-new", "u1", "i1", "a1", newest + 1)
    too_old = _count("too_old")
    _flush(restarted, [(oldest_partition, new), (oldest_partition, oldest)])
    assert _stored(settings) == stored + 1 and _count("too_old") - too_old == 1
    labels = read_parts(settings.labels_dir, LABEL_SCHEMA, columns=["label_id"]).column("label_id").to_pylist()
    assert labels.count(oldest.label_id) == 1 and labels.count(new.label_id) == 1


def test_reading_the_recent_label_parts_keeps_only_rows_within_the_horizon_of_the_newest(tmp_path):
    from features.offline import read_recent_parts

    created = datetime.now(timezone.utc)
    days = [[sample_label(f"d{d}-{k}", "u", "i", "a", T + d * DAY + k * 60) for k in range(5)] for d in range(4)]
    for labels in days:
        write_part(tmp_path, labels_table(labels, created))
    newest = days[-1][-1].label_ts
    got = read_recent_parts(tmp_path, LABEL_SCHEMA, "label_ts", DAY, columns=["label_id", "label_ts"])
    assert sorted(got.column("label_id").to_pylist()) == sorted(
        lab.label_id for labels in days for lab in labels if lab.label_ts >= newest - DAY)
    assert min(got.column("label_ts").to_pylist()) >= newest - DAY
    assert read_recent_parts(tmp_path / "none", LABEL_SCHEMA, "label_ts", DAY, columns=["label_id"]).num_rows == 0


def test_a_failed_label_write_leaves_its_ids_unremembered_so_the_retry_writes_them(tmp_path):
    settings = _settings(tmp_path)
    writer = FeastWriter(settings)
    settings.labels_dir.write_text("not a directory")  # the label table cannot be appended to
    pairs = [(0, sample_label(f"imp{i}", "u", "i", "a", T + i)) for i in range(3)]
    with pytest.raises(OSError):
        _flush(writer, pairs)
    assert len(writer.seen_label_ids) == 0
    settings.labels_dir.unlink()
    _flush(writer, pairs)
    assert _stored(settings) == 3 and len(writer.seen_label_ids) == 3
