"""`AggregateSettings`: the settings of the streaming aggregates' windows, smoothing and dedupe
(env prefix ``CONVCG_AGGREGATES_``); the worker's own settings are `streams.settings`."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from convcg.contract import RECENT_SEQUENCE_LENGTH, WINDOW_SECONDS


class AggregateSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_AGGREGATES_")

    bucket_seconds: int = 300
    last_n: int = RECENT_SEQUENCE_LENGTH
    ctr_prior_alpha: float = 1.0  # prior mean 1/50 = 2% CTR, worth 50 impressions
    ctr_prior_beta: float = 49.0
    cvr_prior_alpha: float = 1.0  # prior mean 1/10 = 10% conversions per engagement
    cvr_prior_beta: float = 9.0
    dedupe_horizon_seconds: float = 8 * 86400.0
    max_seen: int = 2_000_000
    #: accepted event ids per changelog record of seen ids: one flush after a burst holds tens
    #: of thousands (~50 bytes each), more than the broker's 1 MB message limit in one record
    seen_ids_per_record: int = Field(5_000, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "AggregateSettings":
        if self.bucket_seconds < 1 or any(s % self.bucket_seconds for s in WINDOW_SECONDS.values()):
            raise ValueError(f"bucket_seconds must divide every window {WINDOW_SECONDS}")
        if self.dedupe_horizon_seconds < max(WINDOW_SECONDS.values()):
            raise ValueError("dedupe_horizon_seconds must cover the longest window")
        if min(self.ctr_prior_alpha, self.ctr_prior_beta, self.cvr_prior_alpha, self.cvr_prior_beta) <= 0:
            raise ValueError("Beta priors must be > 0")
        return self
