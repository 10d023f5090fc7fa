"""The new-item watcher cannot wedge (issue 28, item 6), over the real retrieval service (tiny
models, FAISS) on a real socket and a real broker: pending items stay bounded while the service
has no index, flushes go in batches the service takes, a batch refused for good is dead-lettered
and the rest goes on, and a watcher that fails is restarted, counted, not silently dead."""

from __future__ import annotations

import threading
import time

import orjson
import pandas as pd
import pytest

from convcg.contract import Impression, event_to_dict
from convcg.kafka.io import json_producer
from index_refresher.builder import read_catalog
from index_refresher.metrics import RefresherMetrics
from index_refresher.new_items import NewItemWatcher
from index_refresher.refresher import RetrievalAdminClient
from registry.store import ModelRegistry
from retrieval.service import build_service, create_app
from retrieval.validation import MAX_ADD_ITEMS
from tests.support.index_rigs import running_server, tiny_registry

N_ITEMS = 100
ADMIN = "bounds-admin"


def impression(n: int, item_id: str) -> bytes:
    imp = Impression(event_id=f"e{n}", impression_id=f"imp{n}", ts=time.time(), user_id=f"u{n % 5}",
                     item_id=item_id, advertiser_id="a1", surface="home", position=n % 10)
    return orjson.dumps(event_to_dict(imp))


def wait_for(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, _, _ = tiny_registry(tmp_path_factory.mktemp("new-items"), n_items=N_ITEMS, versions=1,
                                   admin_token=ADMIN)
    return settings


def watcher_for(settings, url, tmp_path, **kw) -> NewItemWatcher:
    return NewItemWatcher("unused", "unused", RetrievalAdminClient(url, 30, admin_token=ADMIN),
                          set(read_catalog(settings.catalog_path)["item_id"]), tmp_path / "new_items.parquet",
                          metrics=RefresherMetrics(), **kw)


def test_pending_is_bounded_and_flushes_in_batches_the_service_takes(world, tmp_path):
    """Past 10,000 pending items every flush used to be one request the service refused (400),
    retried forever while ``pending`` grew."""
    service = build_service(world)
    with running_server(create_app(service)) as url:
        watcher = watcher_for(world, url, tmp_path, batch=4000, max_pending=12_000)
        rows = [{"item_id": f"n{i:05d}", "advertiser_id": "a1"} for i in range(15_000)]
        watcher.offer(rows)
        assert len(watcher.pending) == 12_000 and watcher.dropped == 3000  # the oldest went
        assert "n00000" not in watcher.pending and "n14999" in watcher.pending
        assert watcher.metrics.items_dropped._value.get() == 3000
        # no index yet: a transient refusal (503); nothing is lost, the next try backs off
        assert watcher.flush() == 0 and len(watcher.pending) == 12_000
        first = watcher.backoff_s
        assert watcher.flush() == 0 and watcher.backoff_s > first > 0
        assert watcher.metrics.flush_failures._value.get() == 2
        # the index arrives: everything goes, in requests the service accepts (> 10,000 in all)
        assert service.loader.load(ModelRegistry(world.registry_root).current_version()).ok
        assert len(watcher.pending) > MAX_ADD_ITEMS
        assert watcher.flush() == 12_000
        assert watcher.pending == {} and watcher.backoff_s == 0 and watcher.added == 12_000
        assert service.state.current.size == N_ITEMS + 12_000
        assert len(pd.read_parquet(watcher.new_items_path)) == 12_000


def test_a_batch_refused_for_good_is_dead_lettered_and_the_rest_goes_on(world, tmp_path):
    service = build_service(world.model_copy(update={"max_body_bytes": 4096}))
    assert service.loader.load().ok
    with running_server(create_app(service)) as url:
        watcher = watcher_for(world, url, tmp_path, batch=10)
        watcher.offer([{"item_id": f"ok{i}", "advertiser_id": "a1"} for i in range(10)])
        watcher.offer([{"item_id": "x" * 5000, "advertiser_id": "a1"}])  # its batch is over 4 KiB: 413
        watcher.offer([{"item_id": f"ok{i}", "advertiser_id": "a1"} for i in range(10, 25)])
        assert watcher.flush() == 16  # batches of 10: ok0-9, [long + ok10-18] refused, ok19-24
        assert watcher.refused == 10 and watcher.pending == {}
        assert watcher.metrics.items_refused.labels("413")._value.get() == 10
        letters = [orjson.loads(line) for line in watcher.refused_path.read_bytes().splitlines()]
        assert len(letters) == 1 and letters[0]["status"] == 413 and len(letters[0]["items"]) == 10
        assert watcher.flush() == 0  # nothing retried
        assert service.state.current.size == N_ITEMS + 16


def test_a_failing_watcher_is_restarted_and_counted_not_silently_dead(world, tmp_path, broker, topics):
    service = build_service(world)
    assert service.loader.load().ok
    blocked = tmp_path / "blocked"
    blocked.mkdir()  # the new-items file path is a folder: saving the sent items fails
    with running_server(create_app(service)) as url:
        watcher = NewItemWatcher(broker.bootstrap, topics.impressions, RetrievalAdminClient(url, 30, admin_token=ADMIN),
                                 set(read_catalog(world.catalog_path)["item_id"]), blocked, flush_s=0.1,
                                 metrics=RefresherMetrics())
        stop = threading.Event()
        thread = threading.Thread(target=watcher.run_supervised, args=(stop, 0.2), daemon=True)
        thread.start()
        try:
            wait_for(watcher.ready.is_set, 30, "the watcher to attach")
            producer = json_producer(broker.bootstrap)
            producer.send(topics.impressions, key=b"u1", value=impression(1, "fresh-a"))
            producer.flush()
            wait_for(lambda: watcher.restarts >= 1, 30, "the failure to be noticed")
            assert thread.is_alive() and watcher.metrics.watcher_restarts._value.get() >= 1
            blocked.rmdir()  # the disk is fixed: the restarted watcher goes on
            wait_for(watcher.ready.is_set, 30, "the watcher to attach again")
            producer.send(topics.impressions, key=b"u2", value=impression(2, "fresh-b"))
            producer.flush()
            wait_for(lambda: service.state.current.has_item("fresh-b"), 30, "fresh-b to be served")
        finally:
            stop.set()
            thread.join(10)
        assert not thread.is_alive()
