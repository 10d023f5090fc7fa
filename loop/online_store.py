"""Which online store `convcg up` (and the freshness benches' ``--store default``) runs on.

``auto`` (the default): a private ``redis-server`` started for the run when the binary is on
the machine, Feast's SQLite file otherwise; ``convcg up --redis HOST:PORT``: an existing Redis,
used as it is (nothing started, nothing stopped). Why Redis first: Feast's SQLite layout is one row
per entity x feature, so at 5,000 raw events/s (~10k entity updates/s x ~11 features) the sink
upserts ~100k rows/s on the shared cores, and freshness fell behind by tens of seconds; Redis
takes one hash per entity (the README's performance table has the measurements).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from convcg.process.redis_server import RedisServer, redis_server_binary, start_redis

StoreChoice = Literal["auto", "redis", "sqlite"]


def resolve_store(choice: StoreChoice) -> Literal["redis", "sqlite"]:
    """``auto`` -> redis when a redis-server binary is on PATH, else sqlite."""
    if choice == "auto":
        return "redis" if redis_server_binary() else "sqlite"
    return choice


@dataclass
class OnlineStore:
    kind: Literal["redis", "sqlite"]
    server: RedisServer | None = None
    external: str | None = None  # HOST:PORT of a Redis this run did not start

    @property
    def connection(self) -> str | None:
        return self.server.connection if self.server is not None else self.external

    @property
    def env(self) -> dict[str, str]:
        """Features settings (``CONVCG_FEATURES_*``) for every process that opens the store."""
        out = {"CONVCG_FEATURES_ONLINE_STORE": self.kind}
        if self.connection is not None:
            out["CONVCG_FEATURES_REDIS_CONNECTION"] = self.connection
        return out

    def describe(self) -> str:
        if self.server is not None:
            return f"private redis-server at {self.server.connection}"
        return f"Redis at {self.external}" if self.external else "Feast SQLite file"

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def start_online_store(choice: StoreChoice, workdir: Path, redis: str | None = None) -> OnlineStore:
    """The run's online store: the Redis at ``redis`` (HOST:PORT) when given, else a private
    Redis (started here) or SQLite (nothing to start)."""
    if redis:
        if choice == "sqlite":
            raise ValueError("a Redis address and the sqlite online store contradict each other")
        return OnlineStore("redis", external=redis)
    kind = resolve_store(choice)
    if kind == "sqlite":
        return OnlineStore("sqlite")
    return OnlineStore("redis", start_redis(workdir / "redis", log_path=workdir / "redis.log"))
