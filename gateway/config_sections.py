"""The sections of ``gateway.yaml`` that stand on their own: the store, the HTTP listeners
(with the operations listener and the console), the pipeline's timings and the plans.

Pure data validated by pydantic; :mod:`gateway.config` assembles them into
:class:`~gateway.config.GatewayConfig` and re-exports them. Each field carries its meaning as
its description, which ``flowbiz schema`` and docs/configuration.md are generated from.
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.errors import ConfigError
from gateway.store.redis_sentinel import SENTINEL_SCHEMES, parse_sentinel_url

__all__ = [
    "ConsoleConfig",
    "HttpServerConfig",
    "OperationsListenerConfig",
    "PipelineConfig",
    "PlanConfig",
    "StoreConfig",
    "default_plans",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PlanConfig(_Model):
    """Limits of a plan (see docs/quotas.md); ``None`` means no limit of that kind."""

    monthly_outbound_messages: int | None = Field(default=None, ge=0)
    monthly_line_pushes: int | None = Field(default=None, ge=0)  # paid LINE pushes
    inbound_per_user_per_minute: float | None = Field(default=None, gt=0)
    inbound_burst: int = Field(default=10, ge=1)
    replies_per_conversation_per_minute: float | None = Field(default=None, gt=0)
    reply_burst: int = Field(default=10, ge=1)
    soft_limit_ratio: float = Field(default=0.8, gt=0, le=1)  # warn the tenant at this share
    # Sent once per window per conversation when the persona has no ``quota_notice`` prompt;
    # null keeps the conversation silent.
    over_quota_notice: str | None = (
        "We have reached our message limit for now and cannot answer at the moment. "
        "We will be back soon."
    )


def default_plans() -> dict[str, PlanConfig]:
    # Built-in plan names without limits, so configs naming them stay valid; declare
    # ``plans:`` to give them limits.
    return {"free": PlanConfig(), "pro": PlanConfig(), "enterprise": PlanConfig()}


_REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", *SENTINEL_SCHEMES})


class StoreConfig(_Model):
    """Where the gateway keeps everything (see docs/deploy.md).

    ``url``: ``sqlite:///path``, ``redis://host:port/db``, or through Redis Sentinel
    ``redis+sentinel://host:port,host:port/master-name[/db]`` (see
    :mod:`gateway.store.redis_sentinel`).

    ``replica_acks``: on Redis, an admission (what the edge does before it answers a
    platform) and every commit wait until this many replicas hold the write (``WAIT``, or
    with ``replica_ack_aof`` ``WAITAOF`` on Redis 7.2+) for at most
    ``replica_ack_timeout_ms``; fewer replicas in time fail the call (503 at the edge, so
    the platform retries). 0, the default, sends no ``WAIT`` at all. SQLite and the memory
    store have no replicas, so a non-zero value is refused for them.
    """

    url: str = "sqlite://flowbiz.db"
    # The url names one node of a Redis Cluster; the client learns the others from it.
    cluster: bool = False
    partitions: int = Field(default=8, ge=1, le=1024)
    prefix: str = "fb"
    dedupe_ttl_seconds: float = Field(default=7 * 86400, gt=0)
    receipts_per_conversation: int = Field(default=100, ge=1)  # newest delivery receipts kept
    replica_acks: int = Field(default=0, ge=0, le=16)
    # Below the store's 10 s command timeout, so a short count is an answer, not a timeout.
    replica_ack_timeout_ms: int = Field(default=500, ge=1, le=5000)
    replica_ack_aof: bool = False  # replicas must have fsynced their AOF (WAITAOF, 7.2+)

    @model_validator(mode="after")
    def _cluster_is_redis(self) -> StoreConfig:
        scheme = urlsplit(self.url).scheme.lower()
        if self.cluster:
            parts = urlsplit(self.url)
            if parts.scheme not in {"redis", "rediss"}:
                raise ValueError("cluster: true needs a redis:// or rediss:// url")
            if parts.path.strip("/") not in {"", "0"}:
                raise ValueError("a Redis Cluster has only database 0")
        if scheme in SENTINEL_SCHEMES:
            try:
                parse_sentinel_url(self.url)
            except ConfigError as exc:
                raise ValueError(exc.problems[0][1]) from exc
        if self.replica_acks and scheme not in _REDIS_SCHEMES:
            raise ValueError(
                f"replica_acks needs a Redis store: a {scheme or 'sqlite'} store has no replicas"
            )
        if self.replica_ack_aof and not self.replica_acks:
            raise ValueError("replica_ack_aof needs replica_acks of at least 1")
        return self


class ConsoleConfig(_Model):
    """The operators' console under ``/console/`` on the operations listener."""

    enabled: bool = True
    session_hours: float = Field(default=8, gt=0, le=24 * 30)
    # "auto": the session cookie is Secure when the request came over TLS; "always": also
    # behind a proxy that terminates TLS (the request then arrives as plain HTTP).
    secure_cookie: Literal["auto", "always"] = "auto"


class OperationsListenerConfig(_Model):
    """Where ``/readyz``, ``/metrics`` and the admin API under ``/v1`` are served.

    ``mode: listener`` (the default) serves them on their own host and port, loopback unless
    changed, and never on the public webhook port. ``mode: public`` serves them on the public
    port instead, every one of them behind a global admin API key.
    """

    mode: Literal["listener", "public"] = "listener"
    host: str = "127.0.0.1"
    port: int = Field(default=9090, ge=0, le=65535)
    console: ConsoleConfig = ConsoleConfig()


class HttpServerConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    public_base_url: str | None = None  # how platforms reach us, for signature checks
    # A request head must be complete this long after the connection opened or its previous
    # request ended (so it also bounds an idle keep-alive connection).
    header_timeout_seconds: float = Field(default=10, gt=0)
    # The whole body must have arrived this long after its head.
    body_timeout_seconds: float = Field(default=30, gt=0)
    # Open connections one client address may hold at once, per listener; None: no cap
    # (behind a load balancer every connection comes from its address).
    max_connections_per_client: int | None = Field(default=64, ge=1)
    # JSON (also inside form fields) nested deeper than this is refused at the edge: nothing
    # that cannot be read back from the inbox is ever acknowledged.
    max_json_depth: int = Field(default=64, ge=1, le=128)
    operations: OperationsListenerConfig = OperationsListenerConfig()


class PipelineConfig(_Model):
    agent_timeout_seconds: float = Field(default=15, gt=0)
    history_limit: int = Field(default=20, ge=0)
    max_delivery_attempts: int = Field(default=6, ge=1)
    retry_base_seconds: float = Field(default=0.5, gt=0)
    retry_max_seconds: float = Field(default=300, gt=0)
    delivery_timeout_seconds: float = Field(default=30, gt=0)
    lease_seconds: float = Field(default=10, gt=0)
    shutdown_grace_seconds: float = Field(default=10, ge=0)
    max_in_flight: int = Field(default=512, ge=1)
