"""Hot swap under real concurrent load: a uvicorn server, client threads, swaps and rollbacks."""

from __future__ import annotations

import gc
import threading
import time

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from registry.serving_model import registry_model_loader
from retrieval.service import build_service, create_app
from tests.support.index_rigs import running_server, tiny_registry

USERS = [f"u{i}" for i in range(12)]
K = 20
CLIENT_THREADS = 4
SETTLE_S = 0.8  # load-only time between swaps


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    settings, catalog, paths = tiny_registry(tmp_path_factory.mktemp("swap"), n_items=400)
    pairs = {p.parent.name: p.name for p in paths}  # model_version -> index_version
    load = registry_model_loader(settings.registry_root)
    expected = {}  # (model_version, user) -> exact top-K item ids from that version's towers
    for version in pairs:
        model = load(version)
        items = model.embed_items(catalog)
        for u in USERS:
            q = model.embed_queries([{"user_id": u, "surface": "home"}])[0]
            expected[(version, u)] = catalog["item_id"].to_numpy()[np.argsort(-(items @ q))[:K]].tolist()
    return settings, pairs, expected


class LoadGenerator:
    """Client threads querying as fast as they can; every response is recorded."""

    def __init__(self, url: str, threads: int = CLIENT_THREADS):
        self.url = url
        self.stop = threading.Event()
        self.records: list[tuple[float, float, int, dict | str]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def run(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                user = USERS[rng.integers(len(USERS))]
                sent = time.monotonic()
                try:
                    r = client.get("/retrieve", params={"user_id": user, "k": K})
                    rec = (sent, time.monotonic(), r.status_code, {**r.json(), "user": user})
                except Exception as exc:  # a transport error is a failed query too
                    rec = (sent, time.monotonic(), -1, repr(exc))
                with self.lock:
                    self.records.append(rec)

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(10)


def test_swaps_under_concurrent_load_fail_nothing_and_never_mix_versions(world):
    settings, pairs, expected = world
    v1, v2 = sorted(pairs)
    service = build_service(settings)
    assert service.loader.load(v1).ok
    marks = {}
    with running_server(create_app(service)) as url, LoadGenerator(url) as gen, \
            httpx.Client(base_url=url, timeout=60) as admin:
        time.sleep(SETTLE_S)
        marks["swap1_start"] = time.monotonic()
        assert admin.post("/admin/load", json={"model_version": v2}).status_code == 200
        marks["swap1_done"] = time.monotonic()
        time.sleep(SETTLE_S)
        marks["rollback_start"] = time.monotonic()
        assert admin.post("/admin/rollback").status_code == 200
        marks["rollback_done"] = time.monotonic()
        time.sleep(SETTLE_S)
        marks["swap2_start"] = time.monotonic()
        assert admin.post("/admin/load", json={"model_version": v2}).status_code == 200
        marks["swap2_done"] = time.monotonic()
        time.sleep(SETTLE_S)
        metrics = admin.get("/metrics").text
    records = gen.records
    errors = [r for r in records if r[2] != 200]
    assert not errors, errors[:3]
    assert len(records) > 200, "the load generator barely ran"
    print(f"{len(records)} queries during the swaps, 0 errors")
    for sent, received, _, body in records:
        pair = (body["model_version"], body["index_version"])
        assert pairs[pair[0]] == pair[1], f"inconsistent pair {pair}"
        # the ranking is exactly the one of that version's query tower over that version's items
        assert [h["item_id"] for h in body["items"]] == expected[(pair[0], body["user"])]

    def versions_between(start, stop):
        return {b["model_version"] for s, r, _, b in records if s >= start and r <= stop}

    assert versions_between(0, marks["swap1_start"]) == {v1}
    assert versions_between(marks["swap1_done"], marks["rollback_start"]) == {v2}
    assert versions_between(marks["rollback_done"], marks["swap2_start"]) == {v1}
    assert versions_between(marks["swap2_done"], float("inf")) == {v2}
    assert 'convcg_retrieval_queries_total{outcome="ok"}' in metrics
    assert 'convcg_retrieval_swaps_total{kind="load"} 3.0' in metrics


def test_in_flight_query_keeps_the_old_pair_until_it_finishes(world):
    settings, pairs, expected = world
    v1, v2 = sorted(pairs)
    service = build_service(settings)
    service.loader.load(v1)
    service.loader.load(v2)
    in_flight = service.state.current  # a query that read the v2 pair and has not finished yet
    service.loader.load(v1)  # swap to v1 (v2 becomes previous)
    service.loader.load(v2)  # a fresh v2 pair: the first v2 pair is displaced
    q = in_flight.model.embed_queries([{"user_id": USERS[0], "surface": "home"}])
    assert [i for i, _ in in_flight.search(q, K)[0]] == expected[(v2, USERS[0])]
    gc.collect()
    released = service.metrics.released_pairs._value.get()
    del in_flight, q
    gc.collect()
    assert service.metrics.released_pairs._value.get() == released + 1


def test_rollback_and_status_commands_against_a_running_service(world):
    from loop.cli import main

    settings, pairs, _ = world
    v1, v2 = sorted(pairs)
    service = build_service(settings)
    service.loader.load(v1)
    service.loader.load(v2)
    runner = CliRunner()
    with running_server(create_app(service)) as url:
        result = runner.invoke(main, ["index", "rollback", "--url", url])
        assert result.exit_code == 0, result.output
        assert service.state.current.model_version == v1
        result = runner.invoke(main, ["index", "status", "--url", url],
                               env={"CONVCG_INDEX_INDEX_ROOT": str(settings.index_root)})
        assert result.exit_code == 0 and f'"model_version": "{v1}"' in result.output
        assert pairs[v2] in result.output  # the artifacts on disk are listed too
    result = runner.invoke(main, ["index", "rollback", "--url", url])  # server gone: clear error
    assert result.exit_code != 0 and "unreachable" in result.output
