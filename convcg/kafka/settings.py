"""`KafkaSettings`: where the broker is and which topics, the one Kafka block that every
component's settings hold (as their field ``kafka``); `ConsumerTuning`: how a consumer fetches,
the one block every consumer's settings hold.

One precedence for every component: a command-line flag, else the component's own
``CONVCG_<COMPONENT>_KAFKA__BOOTSTRAP`` / ``..._KAFKA__TOPIC_PREFIX``, else ``KAFKA_BOOTSTRAP``
(the broker harness's variable, shared by every process of a deployment), else
``127.0.0.1:9092``.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field

from convcg.contract import Topics

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
BOOTSTRAP_ENV = "KAFKA_BOOTSTRAP"

def default_bootstrap() -> str:
    return os.environ.get(BOOTSTRAP_ENV) or DEFAULT_BOOTSTRAP


class KafkaSettings(BaseModel):
    bootstrap: str = Field(default_factory=default_bootstrap, description="Kafka bootstrap servers")
    topic_prefix: str = Field("", description="prefix of every topic name (several deployments on one broker)")

    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    def with_overrides(self, bootstrap: str | None = None, topic_prefix: str | None = None) -> "KafkaSettings":
        """These settings with the command line's values where it gave any."""
        update = {k: v for k, v in (("bootstrap", bootstrap), ("topic_prefix", topic_prefix)) if v is not None}
        return self.model_copy(update=update)


class ConsumerTuning(BaseModel):
    """How a consumer fetches: the broker holds a fetch until ``min_bytes`` are there, but no
    longer than ``max_wait_ms``: fewer, fuller fetches (fewer requests per record), at most
    ``max_wait_ms`` added to a record's latency."""

    max_wait_ms: int = Field(100, ge=1, description="longest the broker holds a fetch for min_bytes")
    min_bytes: int = Field(65536, ge=1, description="bytes a fetch waits for, up to max_wait_ms")

    def aiokafka(self) -> dict[str, int]:
        """As aiokafka's ``AIOKafkaConsumer`` keyword arguments."""
        return {"fetch_max_wait_ms": self.max_wait_ms, "fetch_min_bytes": self.min_bytes}
