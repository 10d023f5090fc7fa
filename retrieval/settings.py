"""Typed settings of the retrieval service (env prefix ``CONVCG_INDEX_``, shared with the
refresher: one environment configures both sides of the index)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.http_auth import DEFAULT_MAX_BODY_BYTES


class RetrievalSettings(BaseSettings):
    """Everything the retrieval HTTP service can be tuned by. Every path defaults under ``./var/``."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_INDEX_", extra="ignore")

    # --- where the model versions and their index artifacts live
    registry_root: Path = Path("var/registry")
    index_root: Path = Path("var/registry/indexes")  # beside the model versions

    # --- the service
    host: str = "127.0.0.1"
    port: int = 8470
    default_k: int = 100
    max_k: int = 1000
    #: faiss OpenMP threads per search (1 keeps concurrent HTTP queries from fighting over cores)
    search_threads: int = 1
    #: answer queries on the event loop (no thread hop; best when a search takes ~1 ms, e.g.
    #: HNSW) instead of the worker thread pool (lets slow exact searches overlap)
    inline_queries: bool = False
    #: bearer token /admin/load, /admin/rollback and /admin/items need; without one the service
    #: refuses to bind a non-loopback address
    admin_token: SecretStr = Field(SecretStr(""), repr=False)
    #: bearer token /retrieve needs; empty: queries are open
    query_token: SecretStr = Field(SecretStr(""), repr=False)
    #: the largest request body read; a larger one is refused with 413 before it is read
    max_body_bytes: int = Field(DEFAULT_MAX_BODY_BYTES, gt=0)

    # --- online user features
    #: where a query's user features come from: ``http``, the features service at
    #: ``features_url`` (empty: no online user features); ``store``, the Feast store at
    #: ``features_repo`` read in-process (the store the features sink writes; one process hop
    #: less per query, see ``bench.system.retrieval_online``; ``import feast`` costs ~5 s on the first read)
    features_source: Literal["http", "store"] = "http"
    #: the features component's Feast repo dir (its ``CONVCG_FEATURES_REPO_DIR``)
    features_repo: Path = Path("var/feast")
    features_view: str = "user_stream"
    features_join_key: str = "user_id"
    #: features HTTP service base URL; empty means "no online user features"
    features_url: str = ""
    features_path: str = "/online-features/user_stream/{user_id}"
    #: bearer token of the features service (its CONVCG_FEATURES_API_TOKEN), if it needs one
    features_token: SecretStr = Field(SecretStr(""), repr=False)
    features_timeout_s: float = 0.05
