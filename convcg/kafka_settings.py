"""`KafkaSettings`: where the broker is and which topics, the one Kafka block that every
component's settings hold (as their field ``kafka``).

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

#: linger (ms) of the producers that write events into the bundled Tansu: the replay, the live
#: phase of `convcg up`, `bench.pipeline_freshness`'s load generator. Tansu's memory storage keeps one
#: object per record batch and lists every batch of a partition on each fetch that has data, so
#: its CPU grows with the batches it holds: more, smaller batches (librdkafka's default 5 ms)
#: make it the largest process on the cores at 5,000 events/s (`bench.pipeline_freshness`:
#: broker 62-67% at 5 ms vs 43-47% at 20 ms; `bench.broker_batches`).
EMBEDDED_PRODUCER_LINGER_MS = 20


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
