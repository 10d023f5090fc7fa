"""The streams' settings read from the environment: the consumers' fetch tuning is the one
`ConsumerTuning` block (`convcg.kafka.settings`), nested under each worker's name."""

from __future__ import annotations

from convcg.kafka.settings import ConsumerTuning
from streams.settings import StreamSettings


def test_each_worker_reads_its_fetch_tuning_from_its_nested_env_names(monkeypatch):
    monkeypatch.setenv("CONVCG_STREAMS_FETCH__MAX_WAIT_MS", "250")
    monkeypatch.setenv("CONVCG_STREAMS_AGGREGATES_FETCH__MIN_BYTES", "1024")
    s = StreamSettings()
    assert s.fetch == ConsumerTuning(max_wait_ms=250)
    assert s.aggregates_fetch == ConsumerTuning(min_bytes=1024)
    assert s.aggregates_fetch.aiokafka() == {"fetch_max_wait_ms": 100, "fetch_min_bytes": 1024}
