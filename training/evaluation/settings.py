"""Settings of the point-in-time evaluation (``convcg eval``), its baselines and the sequence
model runs it trains (env prefix ``CONVCG_EVAL_``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DAY_SECONDS = 86_400.0


class ProtocolSettings(BaseModel):
    """How the log is split and how queries are graded (DESIGN.md, point-in-time protocol)."""

    #: T = this quantile of the engagement event times; training = before T, test = at/after T
    test_quantile: float = Field(0.8, gt=0.0, lt=1.0)
    #: the validation slice: the last share of the training period's engagement times
    validation_share: float = Field(0.1, gt=0.0, lt=1.0)
    ks: tuple[int, ...] = (20, 100, 1000)
    #: queries scored per numpy batch (a [batch, catalog] float matrix at a time)
    batch_size: int = Field(1024, ge=1)


class BaselineSettings(BaseModel):
    recent_window_s: float = Field(7 * DAY_SECONDS, gt=0.0)
    #: item-kNN scores the catalog against the user's last this many engaged items (one of
    #: these, chosen on the validation slice)
    knn_last_items: tuple[int, ...] = (5, 10, 20, 50)
    #: EASE's L2 penalty, chosen on the validation slice from these
    ease_lambdas: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0, 800.0, 1600.0, 3200.0, 6400.0)


class EvalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONVCG_EVAL_", env_nested_delimiter="__")

    protocol: ProtocolSettings = ProtocolSettings()
    baselines: BaselineSettings = BaselineSettings()
