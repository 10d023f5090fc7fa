"""Index building, id mapping, artifacts and their refusal; request validation (no server)."""

from __future__ import annotations

import json
import shutil
from collections import Counter

import numpy as np
import orjson
import pytest

from index_refresher.builder import build_from_vectors
from index_refresher.index_build import (
    EXACT,
    HNSW,
    IndexParams,
    build_index,
    exact_top_ids,
    index_kind,
    measure_recall,
    recall_at_k,
    recall_queries,
)
from index_refresher.new_items import decode_impressions, new_item_rows
from registry.idmap import IdCollisionError, IdMap, stable_id
from registry.index_artifact import (
    INDEX_FILE,
    MANIFEST_FILE,
    ArtifactError,
    find_artifact,
    latest_artifact,
    load_artifact,
)
from retrieval.serving import DeltaItems
from retrieval.validation import BadRequest, parse_new_items, parse_retrieve


def clustered(n: int, dim: int = 16, clusters: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((clusters, dim))
    v = centers[rng.integers(clusters, size=n)] + 0.3 * rng.standard_normal((n, dim))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v.astype(np.float32)


# --- id map -----------------------------------------------------------------------------------

def test_stable_id_is_deterministic_non_negative_and_distinct():
    assert stable_id("item-1") == stable_id("item-1")
    assert stable_id("item-1") != stable_id("item-2")
    ids = [stable_id(f"i{i}") for i in range(10000)]
    assert min(ids) >= 0 and len(set(ids)) == 10000


def test_idmap_round_trip_and_unknown_ids():
    m = IdMap.from_item_ids(["b", "a", "c"])
    assert m.item_ids_of(np.array([stable_id("c"), -1, stable_id("a"), 12345])) == ["c", None, "a", None]
    assert m.contains("a") and not m.contains("z")
    m2 = m.with_added(["z", "a"])
    assert len(m2) == 4 and m2.contains("z") and len(m) == 3  # copy, the original is untouched


def test_idmap_refuses_duplicates_and_collisions():
    with pytest.raises(IdCollisionError, match="duplicate item id 'a'"):
        IdMap.from_item_ids(["a", "b", "a"])
    with pytest.raises(IdCollisionError, match="hash to the same"):
        IdMap.from_pairs(np.array([5, 5]), np.array(["x", "y"], dtype=object))


# --- building and recall ----------------------------------------------------------------------

def test_exact_below_threshold_hnsw_above_and_ids_come_back():
    vecs = clustered(600)
    items = [f"i{i}" for i in range(600)]
    ids = np.array([stable_id(i) for i in items])
    flat = build_index(vecs, ids, IndexParams(exact_max_items=1000), progress=False)
    hnsw = build_index(vecs, ids, IndexParams(exact_max_items=500, hnsw_m=16), progress=False)
    assert index_kind(flat) == EXACT and index_kind(hnsw) == HNSW
    _, got = flat.search(vecs[:5], 1)
    assert got[:, 0].tolist() == ids[:5].tolist()  # each item is its own nearest neighbour


def test_recall_exact_is_one_and_starved_hnsw_is_lower():
    vecs = clustered(3000, dim=32)
    ids = np.arange(3000, dtype=np.int64) * 7 + 3
    queries = recall_queries(vecs, 50, seed=1)
    flat = build_index(vecs, ids, IndexParams(exact_max_items=10_000), progress=False)
    assert measure_recall(flat, vecs, ids, queries, 100) == pytest.approx(1.0)
    starved = build_index(vecs, ids, IndexParams(exact_max_items=10, hnsw_m=4, hnsw_ef_construction=8,
                                                 hnsw_ef_search=1), progress=False)
    good = build_index(vecs, ids, IndexParams(exact_max_items=10, hnsw_m=32, hnsw_ef_search=256),
                       progress=False)
    r_starved = measure_recall(starved, vecs, ids, queries, 100)
    r_good = measure_recall(good, vecs, ids, queries, 100)
    assert r_starved < 0.9 < r_good


def test_recall_at_k_counts_overlap():
    exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    approx = np.array([[4, 3, 9, -1], [5, 6, 7, 8]])
    assert recall_at_k(approx, exact) == pytest.approx((2 + 4) / 8)


# --- artifacts --------------------------------------------------------------------------------

@pytest.fixture
def artifact(tmp_path):
    vecs = clustered(800)
    items = [f"i{i}" for i in range(800)]
    path = build_from_vectors(tmp_path / "indexes", "v000001", items, vecs, IndexParams(exact_max_items=500),
                              recall_sample=50, recall_k=100, min_recall=0.8, progress=False)
    return path, items, vecs


def test_artifact_round_trip(artifact):
    path, items, vecs = artifact
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    assert (manifest["model_version"], manifest["dim"], manifest["count"], manifest["kind"]) == \
        ("v000001", 16, 800, HNSW)
    assert 0.8 <= manifest["recall"] <= 1.0
    loaded = load_artifact(path, expected_model_version="v000001", expected_dim=16)
    assert loaded.index_version == path.name and latest_artifact(path.parent.parent, "v000001") == path
    scores, ids = loaded.index.search(vecs[:3], 3)
    assert loaded.idmap.item_ids_of(ids[:, 0]) == items[:3]
    exact = exact_top_ids(vecs, np.array([stable_id(i) for i in items]), vecs[:3], 1)
    assert ids[:, 0].tolist() == exact[:, 0].tolist()


def test_build_refuses_recall_below_the_gate(tmp_path):
    from index_refresher.builder import BuildError

    with pytest.raises(BuildError, match="recall"):
        build_from_vectors(tmp_path, "v1", [f"i{i}" for i in range(3000)], clustered(3000, dim=32),
                           IndexParams(exact_max_items=10, hnsw_m=4, hnsw_ef_construction=8, hnsw_ef_search=1),
                           recall_sample=50, recall_k=100, min_recall=0.95, progress=False)
    assert latest_artifact(tmp_path, "v1") is None  # nothing half-written left behind


def test_truncated_index_file_is_refused(artifact):
    path, _, _ = artifact
    f = path / INDEX_FILE
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(ArtifactError, match="truncated") as err:
        load_artifact(path)
    assert err.value.reason == "truncated"


def test_corrupted_bytes_same_size_fail_the_checksum(artifact):
    path, _, _ = artifact
    f = path / INDEX_FILE
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum") as err:
        load_artifact(path)
    assert err.value.reason == "checksum"


def test_wrong_dimension_and_wrong_model_version_are_refused(artifact):
    path, _, _ = artifact
    with pytest.raises(ArtifactError, match="dim 16, model has dim 32") as err:
        load_artifact(path, expected_dim=32)
    assert err.value.reason == "dimension"
    with pytest.raises(ArtifactError, match="built for model 'v000001', not 'v000002'") as err:
        load_artifact(path, expected_model_version="v000002")
    assert err.value.reason == "version_mismatch"
    # an artifact copied under another model's folder is refused too
    moved = path.parent.parent / "v000002" / path.name
    shutil.copytree(path, moved)
    with pytest.raises(ArtifactError) as err:
        load_artifact(find_artifact(path.parent.parent, "v000002"), expected_model_version="v000002")
    assert err.value.reason == "version_mismatch"


def test_manifest_that_lies_about_dim_is_refused(artifact):
    path, _, _ = artifact
    manifest = json.loads((path / MANIFEST_FILE).read_text())
    manifest["dim"] = 8
    (path / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="index dim 16 != manifest dim 8"):
        load_artifact(path)


def test_missing_artifact_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="no index artifact for model 'v9'"):
        find_artifact(tmp_path, "v9")
    (tmp_path / "v9" / "ix1").mkdir(parents=True)
    with pytest.raises(ArtifactError, match="no manifest.json"):
        load_artifact(tmp_path / "v9" / "ix1")


# --- incremental items ------------------------------------------------------------------------

def test_delta_items_exact_search_copy_on_write():
    d0 = DeltaItems()
    v = np.eye(4, dtype=np.float32)
    d1 = d0.with_added([{"item_id": "a"}, {"item_id": "b"}], v[:2])
    d2 = d1.with_added([{"item_id": "c"}], v[2:3])
    assert len(d0) == 0 and len(d1) == 2 and d2.item_ids == ("a", "b", "c")
    scores, rows = d2.search(v[2:3], 2)
    assert d2.item_ids[rows[0][np.argmax(scores[0])]] == "c"


def test_new_item_rows_skips_known_duplicates_and_malformed():
    base = {"event_id": "e", "impression_id": "imp", "ts": 1.7e9, "user_id": "u", "surface": "home", "position": 0}
    imps = [{"item_id": "n1", "advertiser_id": "a1"}, {"item_id": "old", "advertiser_id": "a"},
            {"item_id": "n1", "advertiser_id": "a2"}, {"item_id": 5, "advertiser_id": "a"},
            {"advertiser_id": "a"}, {"item_id": "n2", "advertiser_id": "a3"}]
    raws = [orjson.dumps({**base, **imp}) for imp in imps] + [b"{not json", orjson.dumps({"watermark": 1.7e9})]
    rejected = Counter()
    parsed = decode_impressions(raws, now=1.7e9, max_future_s=60.0, rejected=rejected)
    assert new_item_rows(parsed, {"old"}) == [{"item_id": "n1", "advertiser_id": "a1"},
                                             {"item_id": "n2", "advertiser_id": "a3"}]
    assert rejected == {"wrong_type": 1, "missing_field": 1, "malformed_json": 1}


# --- request validation -----------------------------------------------------------------------

def test_parse_retrieve_defaults_and_coercion():
    r = parse_retrieve({"user_id": "u1"}, default_k=100, max_k=1000)
    assert (r.user_id, r.surface, r.k, r.recent_items) == ("u1", "home", 100, None)
    r = parse_retrieve({"user_id": "u1", "k": "5", "surface": "search", "recent_items": "a,b"}, 100, 1000)
    assert (r.k, r.surface, r.recent_items) == (5, "search", ("a", "b"))
    assert r.query({"user__ctr_7d": 0.1, "user_id": "spoofed", "as_of": 1.0}, now=5.0) == \
        {"user__ctr_7d": 0.1, "user_id": "u1", "surface": "search", "recent_items": ["a", "b"], "as_of": 5.0}
    r = parse_retrieve({"user_id": "u1", "as_of": "1700000000.5"}, 100, 1000)  # a query string's text
    assert r.as_of == 1_700_000_000.5 and r.query({}, now=5.0)["as_of"] == 1_700_000_000.5


@pytest.mark.parametrize("data,message", [
    ({}, "user_id is required"),
    ({"user_id": "  "}, "user_id is required"),
    ({"user_id": "u", "k": 0}, "k must be between 1 and 1000, got 0"),
    ({"user_id": "u", "k": 1001}, "k must be between 1 and 1000"),
    ({"user_id": "u", "k": "ten"}, "k must be an integer"),
    ({"user_id": "u", "k": 2.5}, "k must be an integer"),
    ({"user_id": "u", "surface": "feed"}, "unknown surface 'feed'"),
    ({"user_id": "u", "recent_items": {"a": 1}}, "recent_items must be a list"),
    ({"user_id": "u", "colour": "red"}, "unknown field"),
    ({"user_id": "u", "as_of": "soon"}, "as_of must be event-time seconds"),
    ({"user_id": "u", "as_of": float("inf")}, "as_of must be finite"),
    ({"user_id": "u", "as_of": True}, "as_of must be event-time seconds"),
    ([1, 2], "must be a JSON object"),
])
def test_parse_retrieve_rejects_bad_requests(data, message):
    with pytest.raises(BadRequest, match=message):
        parse_retrieve(data, 100, 1000)


def test_parse_new_items():
    assert parse_new_items({"items": [{"item_id": "x", "advertiser_id": "a", "price": "3"}]}) == \
        [{"item_id": "x", "advertiser_id": "a", "price": 3.0}]
    with pytest.raises(BadRequest, match=r"items\[0\].advertiser_id"):
        parse_new_items({"items": [{"item_id": "x"}]})
    with pytest.raises(BadRequest, match="body must be"):
        parse_new_items({"item": []})
