"""The features sink's fetch tuning is the one `ConsumerTuning` block (`convcg.kafka.settings`),
read from the nested env names as the streams' workers read theirs."""

from __future__ import annotations

from convcg.kafka.settings import ConsumerTuning
from features.settings import FeaturesSettings


def test_the_sink_reads_its_fetch_tuning_from_the_nested_env_names(monkeypatch):
    monkeypatch.setenv("CONVCG_FEATURES_FETCH__MAX_WAIT_MS", "250")
    monkeypatch.setenv("CONVCG_FEATURES_FETCH__MIN_BYTES", "2048")
    s = FeaturesSettings()
    assert s.fetch == ConsumerTuning(max_wait_ms=250, min_bytes=2048)
    assert s.fetch.aiokafka() == {"fetch_max_wait_ms": 250, "fetch_min_bytes": 2048}


def test_the_fetch_settings_are_declared_once():
    assert FeaturesSettings().fetch == ConsumerTuning()
    assert not {"fetch_max_wait_ms", "fetch_min_bytes"} & set(FeaturesSettings.model_fields)
