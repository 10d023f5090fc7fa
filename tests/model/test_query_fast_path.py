"""The dict encoder of a few queries (``encode_query_dicts``, the retrieval service's path) gives
the same model input, and so the same query vectors, as the frame path
(``encode_queries(queries_frame(...))``) for every kind of query the service or a caller sends."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model.encoding import (
    HASH_DISTINCT_ABOVE,
    encode_queries,
    encode_query_dicts,
    hash_ids,
    queries_frame,
    recent_sequences,
)
from model.inference import (
    DICT_QUERY_BATCH,
    embed_queries,
    embed_query_dicts,
    embed_query_frame,
)
from model.towers import TwoTowerModel
from registry.store import LoadedModel
from training.learn.recipes import retriever_config

NOW = 1_700_000_000.0
CONFIG = retriever_config(item_buckets=500, recent_items=30, user_features=["user__ctr_7d", "user__clicks_1d"])


def _stored(rng, length: int, newest_age: float = 30.0) -> dict:
    ts = NOW - newest_age - np.cumsum(rng.exponential(600.0, length))
    return {"last_engaged_items": [f"i{j}" for j in rng.integers(0, 2000, length)],
            "last_engaged_ts": ts.tolist(),
            "last_engaged_dwell_ms": rng.lognormal(8.0, 1.0, length).round().tolist()}


def _queries() -> list[dict]:
    rng = np.random.default_rng(3)
    long, short = _stored(rng, 200), _stored(rng, 7)
    middle = long["last_engaged_ts"][40]  # asked in the past: the 40 newest are after it
    return [
        {"user_id": "u1", "surface": "home", "as_of": NOW, **long, "ctr_7d": 0.12, "clicks_1d": 4},
        {"user_id": "u2", "surface": "search", "as_of": NOW, **short, "user__ctr_7d": 0.3},
        {"user_id": "u3", "surface": "home", "as_of": middle, **long},
        {"user_id": "u4", "surface": "home", **long},  # no query time: every engagement visible
        {"user_id": "never-seen", "surface": "home", "as_of": NOW},  # unknown user: no row at all
        {"user_id": "u5", "surface": "home", "as_of": NOW, "recent_items": [f"i{j}" for j in range(50)]},
        {"user_id": "u6", "surface": "home", "as_of": NOW, "recent_items": ["i1", "i2"], **short},
        {"user_id": "u7", "surface": "home", "as_of": NOW, "recent_items": []},
        {"user_id": "u8", "as_of": NOW, **short, "ctr_7d": "0.25", "clicks_1d": None},  # no surface
        {"user_id": 42, "surface": "home", "as_of": NOW, **short, "ctr_7d": "n/a", "clicks_1d": True},
        {"user_id": "u9", "surface": "home", "as_of": NOW, "last_engaged_items": long["last_engaged_items"][:20],
         "last_engaged_ts": long["last_engaged_ts"][:19]},  # times not one per id: ids only
        {"user_id": "u10", "surface": "home", "as_of": NOW, "last_engaged_items": short["last_engaged_items"],
         "last_engaged_ts": short["last_engaged_ts"], "last_engaged_dwell_ms": [1500.0, 20.0]},  # dwell short
        {"user_id": "u11", "surface": "home", "as_of": str(NOW), **short, "clicks_1d": 2.5},
        {"user_id": "u12", "surface": "home", "as_of": None, "recent_items": None, **short},
    ]


@pytest.fixture(scope="module")
def model() -> TwoTowerModel:
    torch.manual_seed(0)
    return TwoTowerModel(CONFIG).eval()


def _assert_same_inputs(queries: list[dict]) -> None:
    fast, frame = encode_query_dicts(queries, CONFIG), encode_queries(queries_frame(queries), CONFIG)
    for name in ("user", "surface", "recent", "dense", "recent_age", "recent_dwell"):
        a, b = getattr(fast, name), getattr(frame, name)
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert torch.equal(a, b), (name, a, b)


@pytest.mark.parametrize("index", range(len(_queries())))
def test_one_query_encodes_and_embeds_as_the_frame_path(model, index):
    query = _queries()[index]
    _assert_same_inputs([query])
    np.testing.assert_array_equal(embed_query_dicts(model, [query]), embed_query_frame(model, queries_frame([query])))


def test_a_mixed_batch_encodes_as_the_frame_path(model):
    """Columns some queries lack (NaN in the frame), ids and features of mixed types."""
    queries = _queries()
    rng = np.random.default_rng(0)
    for _ in range(20):
        part = [queries[i] for i in rng.choice(len(queries), size=rng.integers(2, 6), replace=False)]
        _assert_same_inputs(part)
    _assert_same_inputs(queries)
    np.testing.assert_array_equal(embed_query_dicts(model, queries), embed_query_frame(model, queries_frame(queries)))


def test_the_inputs_read_the_sequence_as_of_the_query_time():
    """What the shared rules give (not only that both paths agree)."""
    q = _queries()
    inputs = encode_query_dicts([q[2], q[4], q[10]], CONFIG)
    long_ts = np.asarray(q[2]["last_engaged_ts"])
    visible = long_ts < q[2]["as_of"]
    assert (inputs.recent[0] != 0).all()  # 159 visible engagements fill the 30 slots
    np.testing.assert_allclose(inputs.recent_age[0].numpy(), (q[2]["as_of"] - long_ts[visible][:30]).astype(np.float32))
    np.testing.assert_array_equal(
        inputs.recent[0].numpy(),
        hash_ids(np.asarray(q[2]["last_engaged_items"])[visible][:30], CONFIG.item_buckets, "item") + 1)
    assert (inputs.recent[1] == 0).all() and (inputs.recent_age[1] == 0).all()  # unknown user
    assert (inputs.recent[2, :20] != 0).all() and (inputs.recent[2, 20:] == 0).all()
    assert (inputs.recent_age[2] == 0).all()  # 19 times for 20 ids: read as ids only
    # a request's own ids: its first 30, no times; in a batch, every query reads its own ids
    own = encode_query_dicts([q[5], q[0]], CONFIG)
    assert (own.recent[0] != 0).all() and (own.recent_age[0] == 0).all() and (own.recent[1] == 0).all()
    dwell = encode_query_dicts([q[11]], CONFIG).recent_dwell[0].numpy()
    np.testing.assert_array_equal(dwell[:7], np.float32([1500.0, 20.0, 0, 0, 0, 0, 0]))


def test_a_time_that_is_not_a_number_is_never_before_the_query_and_such_a_dwell_is_0():
    recent, age, _ = recent_sequences([["a", "b", "c"]], [[NOW - 10, float("nan"), None]], [None], np.array([NOW]),
                                      CONFIG)
    assert (recent[0, :1] != 0).all() and (recent[0, 1:] == 0).all()
    assert age[0, 0] == 10.0
    _, _, dwell = recent_sequences([["a", "b", "c"]], [[NOW - 30, NOW - 20, NOW - 10]], [[None, float("inf"), 5.0]],
                                   np.array([NOW]), CONFIG)
    np.testing.assert_array_equal(dwell[0, :3], np.float32([0.0, 0.0, 5.0]))


def test_hashing_distinct_ids_first_gives_the_same_buckets():
    ids = [f"i{j % 3000}" for j in range(HASH_DISTINCT_ABOVE + 5000)]
    whole = hash_ids(ids, 20_000, "item")  # above the threshold: pandas hashes the distinct ids
    chunks = np.concatenate([hash_ids(ids[s:s + 1000], 20_000, "item") for s in range(0, len(ids), 1000)])
    np.testing.assert_array_equal(whole, chunks)


def test_the_served_path_takes_the_dict_encoder_for_a_few_queries_only(model, monkeypatch):
    import model.inference as inference

    loaded = LoadedModel("v", model, CONFIG, {}, {})
    queries = _queries()
    calls = []
    real = inference.embed_query_dicts
    monkeypatch.setattr(inference, "embed_query_dicts", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    np.testing.assert_array_equal(loaded.embed_queries(queries[:1]), embed_query_frame(model, queries_frame(queries[:1])))
    many = (queries * (DICT_QUERY_BATCH // len(queries) + 1))[:DICT_QUERY_BATCH + 1]
    np.testing.assert_array_equal(embed_queries(model, many), embed_query_frame(model, queries_frame(many)))
    assert calls == [1]
    assert loaded.embed_queries([]).shape == (0, CONFIG.retrieval_dim)
