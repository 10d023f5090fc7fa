"""The sink's second line against poison: a record that got past the door checks but that a
store refuses on its data is bisected out of its batch and dead-lettered with the store's
reason; the rest of the batch is written (real Feast stores: SQLite here). Only an unavailable
store is retried."""

from __future__ import annotations

import errno
import sqlite3
from datetime import datetime, timezone

import pytest
import redis.exceptions

from convcg.contract import FeatureUpdate, Topics
from convcg.validation import decode_dead_letter
from features.offline import read_parts
from features.online.read import OnlineReader
from features.sink.pending import PendingOffline
from features.sink.worker import Batch, FeastWriter
from features.sink.updates import LABEL_SCHEMA
from features.sink.write_errors import is_transient, split_on_data_errors
from tests.support.feature_samples import full_update, sample_label
from tests.features.test_sink import T, _settings
from tests.convcg.test_fuzz_labels_updates import Record

TOPICS = Topics("werr-")


def test_split_writes_every_good_half_and_hands_back_each_bad_item():
    written: list[list[int]] = []

    def write(part):
        if any(x % 7 == 3 for x in part):
            raise ValueError(f"cannot hold {[x for x in part if x % 7 == 3]}")
        written.append(list(part))
        return len(part)

    done, failed = split_on_data_errors(list(range(20)), write)
    assert sorted(x for part in written for x in part) == [x for x in range(20) if x % 7 != 3]
    assert sum(done) == 17 and [x for x, _ in failed] == [3, 10, 17]
    assert all(isinstance(exc, ValueError) for _, exc in failed)


def test_split_raises_a_transient_failure_at_once():
    calls = []

    def write(part):
        calls.append(len(part))
        raise redis.exceptions.ConnectionError("store down")

    with pytest.raises(redis.exceptions.ConnectionError):
        split_on_data_errors([1, 2, 3, 4], write)
    assert calls == [4]  # not bisected: the whole batch is retried later


def test_transient_means_the_store_not_the_data():
    assert is_transient(redis.exceptions.ConnectionError("refused"))
    assert is_transient(redis.exceptions.ResponseError("OOM command not allowed when used memory > 'maxmemory'"))
    assert is_transient(sqlite3.OperationalError("database is locked"))
    assert is_transient(OSError(errno.ENOSPC, "No space left on device"))
    assert is_transient(ConnectionResetError())
    with pytest.raises(OSError) as overflow:
        datetime.fromtimestamp(1e18, tz=timezone.utc)  # what a far event time raises on Linux
    assert not is_transient(overflow.value)
    assert not is_transient(OverflowError("int too big to convert"))
    assert not is_transient(ValueError("year 31688740476 is out of range"))
    assert not is_transient(redis.exceptions.ResponseError("WRONGTYPE Operation against a key"))


def _batch(updates: list[FeatureUpdate]) -> Batch:
    batch = Batch(updates=list(updates))
    for i, u in enumerate(updates):
        batch.sources[id(u)] = Record(TOPICS.feature_updates, 0, i, b"k", b"{}")
    return batch


def test_an_online_write_refused_on_data_writes_the_rest_and_dead_letters_the_poison(tmp_path):
    writer = FeastWriter(_settings(tmp_path, TOPICS))
    good = [full_update("item", f"i{i}", T + i, i) for i in range(6)]
    far = full_update("item", "i-far", 1e18, 1)  # constructed past the door checks
    big = full_update("item", "i-big", T, 1)
    big.features["impressions_1h"] = 2**63
    batch = _batch(good[:3] + [far] + good[3:] + [big])
    writer.write_online(batch)
    got = OnlineReader(writer.store).read("item_stream", [u.entity_id for u in good + [far, big]], ["impressions_1h"])
    assert [g["features"]["impressions_1h"] for g in got] == [u.features["impressions_1h"] for u in good] + [None, None]
    dead = [decode_dead_letter(raw) for raw in batch.dead_letters]
    assert sorted(d.offset for d in dead) == [3, 7] and {d.reason for d in dead} == {"unwritable_feature_update"}
    assert all(d.detail and d.topic == TOPICS.feature_updates for d in dead)
    assert batch.updates == good[:3] + good[3:]  # the refused ones are not kept for the offline rows


def test_offline_rows_and_labels_refused_on_data_are_handed_back_and_the_rest_kept(tmp_path):
    writer = FeastWriter(_settings(tmp_path, TOPICS))
    pending = PendingOffline()
    good = [full_update("user", f"u{i}", T + i, i) for i in range(4)]
    far = full_update("user", "u-far", 1e18, 1)
    refused = pending.add(good[:2] + [far] + good[2:], [], [], 0.0)
    assert [u for u, _ in refused] == [far] and pending.rows == 4
    assert sorted(pending.updates_tables(datetime.now(timezone.utc))["user"].column("user_id").to_pylist()) == [
        u.entity_id for u in good]

    labels = [sample_label(f"imp{i}", "u1", "i1", "a1", T + i) for i in range(4)]
    big = sample_label("imp-big", "u1", "i1", "a1", T)
    big.position = 2**63
    pending = PendingOffline(labels=[(0, lab) for lab in labels[:2] + [big] + labels[2:]],
                             created=datetime.now(timezone.utc))
    pending.sources = {id(lab): Record(TOPICS.labels, 0, i, b"k", b"{}")
                       for i, (_, lab) in enumerate(pending.labels)}
    writer.write_labels(pending)
    stored = read_parts(writer.settings.labels_dir, LABEL_SCHEMA).column("label_id").to_pylist()
    assert sorted(stored) == sorted(lab.label_id for lab in labels)
    dead = [decode_dead_letter(raw) for raw in pending.dead_letters]
    assert [(d.offset, d.reason) for d in dead] == [(2, "unwritable_label")]
    assert big.label_id not in writer.seen_label_ids  # a later, repaired copy would still be taken
