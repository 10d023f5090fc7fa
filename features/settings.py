"""One typed settings object for the features component (env prefix ``CONVCG_FEATURES_``).

Every default is embedded and every path defaults under ``./var/``, so ``convcg features ...``
runs with no setup: SQLite online store, parquet offline store, local registry file.
Set ``CONVCG_FEATURES_ONLINE_STORE=redis`` for the Redis online store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.dedupe import DEFAULT_HORIZON_S
from convcg.http_auth import DEFAULT_MAX_BODY_BYTES
from convcg.kafka.settings import ConsumerTuning, KafkaSettings


class FeaturesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_FEATURES_", env_nested_delimiter="__", extra="ignore")

    # --- Feast repo ---------------------------------------------------------------------
    project: str = Field("convcg", description="Feast project; also isolates Redis keys")
    repo_dir: Path = Path("var/feast")
    registry_path: Path | None = Field(None, description="default: <repo_dir>/registry.db")
    registry_cache_ttl_seconds: int = Field(
        60, description="how long a loaded registry is trusted before re-reading it")
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: Path | None = Field(None, description="default: <repo_dir>/online.db")
    redis_connection: str = Field("127.0.0.1:6379", description="HOST:PORT[,db=N] of the Redis online store "
                                  "(`--redis` on the features commands)")
    redis_skip_dedup: bool = Field(
        True, description="write Redis rows without first reading their stored event time. Safe "
        "here: the sink keeps the newest update per entity in each batch, and updates are keyed by "
        "entity_id so one entity's updates stay ordered in one partition; saves a round of HMGETs")
    online_writer: Literal["fast", "feast"] = Field(
        "fast", description="fast: Feast's Redis / SQLite row format written with per-view keys "
        "resolved once (features.online.write); feast: Feast's own online_write_batch")
    offline_dir: Path | None = Field(None, description="default: <repo_dir>/offline")
    catalog_path: Path = Path("var/catalog/items.parquet")
    feature_ttl_days: float = Field(
        30.0, description="feature values older than this are not joined / served (0 = no limit)")

    # --- Kafka sink ---------------------------------------------------------------------
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    consumer_group: str = "convcg-features-sink"
    batch_max_records: int = Field(1000, description="records per poll; ~1,000 wrote fastest per update (bench)")
    batch_max_wait_ms: int = 100
    fetch: ConsumerTuning = Field(default_factory=ConsumerTuning, description="the sink's fetches "
                                  "(CONVCG_FEATURES_FETCH__MAX_WAIT_MS, CONVCG_FEATURES_FETCH__MIN_BYTES)")
    offline_flush_seconds: float = Field(
        5.0, description="append offline part files / labels (and commit) at least this often")
    offline_flush_rows: int = 50_000
    compact_max_parts: int = Field(
        64, ge=2, description="a folder of offline part files (per entity, labels) with more parts "
        "than this has its runs of small parts merged (features.sink.compaction; every row kept)")
    compact_part_bytes: int = Field(64 * 1024 * 1024, gt=0, description="parts smaller than this are "
                                    "merged, into parts of about this size")
    retry_initial_seconds: float = 0.2
    retry_max_seconds: float = 10.0
    labels_dir: Path = Path("var/labels")
    dedupe_horizon_s: float = Field(
        DEFAULT_HORIZON_S, gt=0, description="event time a label id is remembered for, to drop "
        "redelivered copies (convcg.dedupe; the trainer's setting of the same name): the sink "
        "loads only the stored labels this close to the newest one at start, and forgets older ids")
    metrics_port: int | None = Field(None, description="sink: serve /metrics on this port")
    metrics_host: str = Field("127.0.0.1", description="sink: the address /metrics binds (loopback unless set)")

    # --- HTTP service -------------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 8610
    api_token: SecretStr | None = Field(None, repr=False,
                                        description="when set, requests need 'Authorization: Bearer <token>'")
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0,
                                description="the largest request body read; larger ones get 413 unread")
    max_entities_per_request: int = 1000

    # --- training sets ------------------------------------------------------------------
    datasets_dir: Path = Path("var/datasets")
    dataset_as_of_lag_seconds: float = Field(
        60.0, description="default snapshot time is now minus this, so no part file that is "
        "still being written can fall inside a snapshot")
    dataset_engine: Literal["auto", "feast", "asof"] = Field(
        "auto", description="feast: Feast's historical retrieval (quadratic per hot entity key in "
        "the file store); asof: the same rule as a sorted merge_asof; auto: feast up to "
        "dataset_feast_max_labels labels, asof above")
    dataset_feast_max_labels: int = 20_000
    dataset_slice_rows: int = Field(
        100_000, description="labels per point-in-time slice handed to Feast at once")

    # --- derived ------------------------------------------------------------------------
    @property
    def registry_file(self) -> Path:
        return self.registry_path or self.repo_dir / "registry.db"

    @property
    def sqlite_file(self) -> Path:
        return self.sqlite_path or self.repo_dir / "online.db"

    @property
    def offline_root(self) -> Path:
        return self.offline_dir or self.repo_dir / "offline"
