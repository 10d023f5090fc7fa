"""`convcg up` end to end on a slice of MovieLens-100k: every component as its own process."""

from __future__ import annotations

import json

import pytest

from loop.up import LoopSettings, run_loop
from training.evaluation.protocol import HEADLINE


@pytest.mark.slow
@pytest.mark.broker  # `convcg up` starts its own broker
def test_up_runs_the_whole_loop_and_reports(tmp_path, monkeypatch):
    # a deployment's registry retention (here: keep 1) does not reach into the run, whose report
    # grades and times every version (a run with more versions than the default 10 lost them)
    monkeypatch.setenv("CONVCG_REGISTRY_KEEP_VERSIONS", "1")
    settings = LoopSettings(limit=30_000, trigger_labels=5_000, trigger_seconds=15.0, rate=800.0, timeout_s=600)
    summary = run_loop(tmp_path, settings)
    assert summary["events_processed"] == summary["events_replayed"] == 27_000
    kinds = summary["labels_by_kind"]
    assert kinds["engagement"] > 0 and kinds["negative"] > 0 and kinds["conversion"] > 0
    assert summary["dead_letters"] == 0 and summary["labels_redelivered"] == 0
    assert len(summary["model_versions"]) >= 2 and summary["model_after"] != summary["model_before"]
    assert sorted(p.name for p in (tmp_path / "registry" / "versions").iterdir()) == summary["model_versions"]
    assert summary["index_swaps"] >= 2
    assert summary["retriever_queries"] > 0 and summary["retriever_query_failures"] == 0
    # the retrieval service read every query's user row from the Feast store in-process
    assert summary["retriever_feature_source"] == "store"
    assert summary["retriever_feature_reads"] >= summary["retriever_queries"]
    assert summary["retriever_feature_read_failures"] == 0
    assert 0 <= summary[f"{HEADLINE}_before"] <= 1 and 0 <= summary[f"{HEADLINE}_after"] <= 1
    # point-in-time headline beside the baselines of the same run, the verdict printed either way
    assert summary["retrieval_queries"]["conversion_queries"] > 0
    assert 0 < summary[f"{HEADLINE}_popularity"] <= 1 and 0 < summary[f"{HEADLINE}_item_knn"] <= 1
    assert summary["retrieval_target"].endswith("MET")
    pace = summary["live_pace"]
    assert pace["events"] == 27_000 - 12_000 and abs(pace["achieved_events_per_s"] / 800 - 1) <= 0.10
    fresh = summary["feature_freshness_seconds"]
    assert fresh["count"] > 50 and 0 < fresh["p50"] <= fresh["p99"] <= fresh["max"]
    assert summary["label_freshness_seconds"]["count"] > 0 and summary["model_freshness_seconds"]["count"] > 0
    # model freshness cut into its legs, read from the versions' step starts and index artifacts
    parts = summary["model_freshness_seconds"]["parts"]
    assert parts["train_and_gate"]["count"] > 0 and parts["train_and_gate"]["p50"] > 0
    assert all(p["count"] == parts["train_and_gate"]["count"] and p["p50"] >= 0 for p in parts.values())
    assert "Where model freshness goes" in (tmp_path / "report.md").read_text()
    assert "event in Kafka -> visible in an online lookup" in (tmp_path / "report.md").read_text()
    assert "| PIT conv R@100 |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / "report.md").exists() and (tmp_path / "recall_over_versions.png").exists()
    assert json.loads((tmp_path / "summary.json").read_text())["model_after"] == summary["model_after"]
