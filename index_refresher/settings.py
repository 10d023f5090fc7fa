"""Typed settings of the index refresher (env prefix ``CONVCG_INDEX_``, shared with the retrieval
service: one environment configures both sides of the index)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.kafka.settings import KafkaSettings
from convcg.validation import DEFAULT_MAX_FUTURE_S


class RefresherSettings(BaseSettings):
    """Everything the index builder and the refresher can be tuned by.

    Every path defaults under ``./var/``.
    """

    model_config = SettingsConfigDict(env_prefix="CONVCG_INDEX_", env_nested_delimiter="__", extra="ignore")

    # --- where things live
    registry_root: Path = Path("var/registry")
    catalog_path: Path = Path("var/catalog/items.parquet")
    index_root: Path = Path("var/registry/indexes")  # beside the model versions
    #: items first seen on the impressions topic (kept so the next full build includes them)
    new_items_path: Path = Path("var/index_refresher/new_items.parquet")

    # --- index build
    #: catalogs with at least this many items get an ANN (HNSW) index; smaller ones exact search
    exact_max_items: int = 200_000
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256  # recall@100 ~0.97 on clustered 100k x 64 (bench.perf.index_query)
    embed_batch_size: int = 4096
    #: queries sampled (from item vectors) to measure ANN recall@k against exact search
    recall_sample_queries: int = 200
    recall_k: int = 100
    #: a build whose measured ANN recall is below this is refused
    min_recall: float = 0.90
    seed: int = 0

    # --- refresher
    #: CPU niceness of the refresher process: index builds yield the cores to the retrieval
    #: service when both run on one machine
    build_niceness: int = 10
    retrieval_url: str = "http://127.0.0.1:8470"
    #: the retrieval service's admin bearer token (its CONVCG_INDEX_ADMIN_TOKEN), sent on every
    #: admin call
    admin_token: SecretStr = Field(SecretStr(""), repr=False)
    poll_interval_s: float = 5.0
    #: index artifacts kept per model version after a push (the serving and the previous pair's
    #: are kept too; artifacts of model versions pruned from the registry go)
    keep_index_artifacts: int = Field(2, ge=1)
    admin_timeout_s: float = 600.0
    #: watch the impressions topic for new items (``convcg refresher --bootstrap`` turns it on)
    watch_new_items: bool = False
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    #: new items are embedded and pushed in batches at most this far apart
    new_item_flush_s: float = 1.0
    new_item_batch: int = Field(512, ge=1, le=10_000, description="items per /admin/items request")
    #: new items held while the service cannot take them (no index yet, down); past this the
    #: oldest are dropped (counted; picked up again when seen again)
    new_item_max_pending: int = Field(100_000, ge=1)
    #: Prometheus /metrics of the refresher (0 = off), bound to ``metrics_host``
    metrics_port: int = Field(0, ge=0)
    metrics_host: str = "127.0.0.1"
    #: impressions stamped further ahead of now than this are rejected (the contract's check)
    max_future_s: float = DEFAULT_MAX_FUTURE_S
