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
