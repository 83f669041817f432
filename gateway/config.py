"""The gateway's configuration: one YAML file, validated by pydantic.

Credentials never live in the file: a secret field holds ``env:NAME`` and the value is read
from the environment at load time. Channel settings are validated by the model that each
connector package declares in its ``SPEC`` (found by :mod:`gateway.channel_config` without
importing the connectors here), so ``flowbiz check`` reports a problem in a Slack or LINE
block with the same precision as one in the core. Each connector then checks the blocks of
its kind together (``SPEC.check``: a Slack workspace or a LINE bot configured twice, a
WhatsApp number on two channels): what would make its webhooks ambiguous is a problem here,
never a traceback when the gateway starts.

:func:`load_config` collects *every* problem, each with the dotted path of its key, and
raises one :class:`~gateway.errors.ConfigError`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from gateway.channel_config import ChannelConfig, PlacedChannel, connector_package
from gateway.errors import ConfigError
from gateway.handoff_config import Desk, HandoffConfig, plan_desks
from gateway.mcp_config import MCP_SERVER_NAME, McpServerConfig
from gateway.netguard import check_url
from gateway.safety import SafetyConfig
from gateway.secret_ref import Secret
from gateway.store.redis_sentinel import SENTINEL_SCHEMES, parse_sentinel_url

__all__ = [
    "TENANT_ID_PATTERN",
    "ChannelCheck",
    "ChannelConfig",
    "ChannelKind",
    "GatewayConfig",
    "HttpServerConfig",
    "OperationsListenerConfig",
    "PipelineConfig",
    "PlacedChannel",
    "PlanConfig",
    "RoutingConfig",
    "RoutingRule",
    "Secret",
    "StoreConfig",
    "TenantConfig",
    "channel_kind",
    "load_config",
    "parse_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _RawChannel(_Model):
    """First-pass view of a channel block: only the fields every channel shares."""

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: str
    id: str = ""


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


def _default_plans() -> dict[str, PlanConfig]:
    # Built-in plan names without limits, so configs naming them stay valid; declare
    # ``plans:`` to give them limits.
    return {"free": PlanConfig(), "pro": PlanConfig(), "enterprise": PlanConfig()}


TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A tenant id: it appears in URL paths and store keys, so it is kept to this alphabet."""


class TenantConfig(_Model):
    id: Annotated[str, Field(pattern=TENANT_ID_PATTERN)]
    name: str = ""
    plan: str = "free"
    default_persona: str | None = None
    persona_switch: bool | None = None  # the switch command; None: routing.persona_switch
    channels: tuple[ChannelConfig, ...] = ()
    # Where quota warnings go, as webhooks signed with gateway.signing (newest secret first).
    notify_url: str | None = None
    notify_secrets: tuple[Secret, ...] = ()
    notify_allow_private: bool = False  # SSRF guard (gateway.netguard) off for notify_url
    handoff: HandoffConfig | None = None  # this tenant's own desk (gateway/handoff_config.py)

    @model_validator(mode="after")
    def _signed_notifications(self) -> TenantConfig:
        if self.notify_url is not None and not self.notify_secrets:
            raise ValueError("notify_url needs notify_secrets to sign the webhooks")
        if self.notify_url is not None:
            check_url(
                self.notify_url,
                allow_private=self.notify_allow_private,
                field="notify_url",
                opt_out="notify_allow_private",
            )
        return self

    def channel(self, kind: str, channel_id: str | None = None) -> ChannelConfig | None:
        for channel in self.channels:
            if channel.kind == kind and (channel_id is None or channel.name == channel_id):
                return channel
        return None


class RoutingRule(_Model):
    """First matching rule wins. Every given condition must hold."""

    persona: str
    tenant: str | None = None
    channel: str | None = None
    keywords: tuple[str, ...] = ()  # any of them, as whole words, case-insensitive
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from exc
        return value


class RoutingConfig(_Model):
    default_persona: str = "core"
    sticky_seconds: float = Field(default=1800, ge=0)
    switch_command: str = "/persona"
    persona_switch: bool = True  # tenants and channels may turn the switch command off
    # The answer to a switch to a persona that is unknown *or* not reachable here (the same
    # bytes, so it reveals nothing); $available lists what may be chosen on this channel.
    switch_unknown_reply: str = "There is no such persona here. You can switch to: $available."
    # Sent when no persona may answer on a channel (defaults unreachable there); null: silence.
    unreachable_reply: str | None = "Sorry, no assistant is available on this channel."
    rules: tuple[RoutingRule, ...] = ()


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


class GatewayConfig(_Model):
    store: StoreConfig = StoreConfig()
    http: HttpServerConfig = HttpServerConfig()
    pipeline: PipelineConfig = PipelineConfig()
    personas_dir: Path = Path("agents/personas")
    routing: RoutingConfig = RoutingConfig()
    tenants: tuple[TenantConfig, ...] = ()
    plans: dict[str, PlanConfig] = Field(default_factory=_default_plans)
    safety: SafetyConfig = SafetyConfig()  # the pre-check before any agent (gateway/safety.py)
    # A desk serving the tenants it lists (default: its operators' tenant); off when absent.
    handoff: HandoffConfig | None = None
    # Model Context Protocol servers by name; personas grant their tools (gateway/mcp_config.py).
    mcp_servers: dict[Annotated[str, Field(pattern=MCP_SERVER_NAME)], McpServerConfig] = Field(
        default_factory=dict
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    source: Path | None = None  # the file this came from, for relative paths

    def tenant(self, tenant_id: str) -> TenantConfig | None:
        for tenant in self.tenants:
            if tenant.id == tenant_id:
                return tenant
        return None

    def channels_of_kind(self, kind: str) -> list[tuple[TenantConfig, ChannelConfig]]:
        return [(t, c) for t in self.tenants for c in t.channels if c.kind == kind]

    def handoff_desks(self) -> tuple[Desk, ...]:
        """Every operators' desk, with the tenants it serves (see gateway/handoff_config.py)."""
        return plan_desks(self.handoff, self._tenant_desks())[0]

    def _tenant_desks(self) -> list[tuple[int, str, HandoffConfig]]:
        return [(i, t.id, t.handoff) for i, t in enumerate(self.tenants) if t.handoff is not None]


ChannelCheck = Callable[[Sequence[PlacedChannel[Any]], GatewayConfig], list[tuple[str, str]]]
"""A connector's check of every block of its kind: ``(path, message)`` problems."""


@runtime_checkable
class ChannelKind(Protocol):
    """What the configuration reads of a connector package's ``SPEC``.

    The full spec is :class:`connectors.spec.ConnectorSpec`, which this kernel cannot import;
    mypy proves there that every spec is a ``ChannelKind``.
    """

    @property
    def kind(self) -> str: ...

    @property
    def config_model(self) -> type[ChannelConfig]: ...

    @property
    def check(self) -> ChannelCheck: ...


def channel_kind(kind: str) -> ChannelKind | None:
    """The ``SPEC`` of the connector package serving ``kind``; None for an unknown kind."""
    package = connector_package(kind)
    if package is None:
        return None
    spec = package.SPEC
    if not isinstance(spec, ChannelKind) or spec.kind != kind:
        raise TypeError(f"{package.__name__}.SPEC is not the ConnectorSpec of {kind!r}")
    return spec


def _loc(parts: tuple[int | str, ...]) -> str:
    return ".".join(str(p) for p in parts) or "(root)"


def _problems(error: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[tuple[str, str]]:
    return [(_loc(prefix + tuple(e["loc"])), e["msg"]) for e in error.errors()]


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Paths in the file are relative to the file, not to the working directory."""
    personas = data.get("personas_dir")
    if isinstance(personas, str) and not Path(personas).is_absolute():
        data["personas_dir"] = str(base / personas)
    store = data.get("store")
    if isinstance(store, dict):
        url = store.get("url")
        if (
            isinstance(url, str)
            and url.startswith("sqlite://")
            and not url.startswith("sqlite:///")
        ):
            store["url"] = "sqlite:///" + str(base / url.removeprefix("sqlite://"))


def parse_config(data: Any, *, source: Path | None = None) -> GatewayConfig:
    """Validate already-loaded YAML data; raise ConfigError with every problem found."""
    if not isinstance(data, dict):
        raise ConfigError([("(root)", "the configuration must be a mapping")])
    data = dict(data)
    if source is not None:
        _resolve_relative(data, source.parent)
        data["source"] = str(source)
    problems: list[tuple[str, str]] = []

    # Pass 1: core fields, with channel blocks seen only as their shared fields.
    core: GatewayConfig | None = None
    try:
        core = GatewayConfig.model_validate(_with_raw_channels(data))
    except ValidationError as exc:
        problems += _problems(exc)

    # Pass 2: each channel block against its connector's own model.
    typed: dict[tuple[int, int], ChannelConfig] = {}
    kinds: dict[str, ChannelKind] = {}
    tenants = data.get("tenants")
    for ti, tenant in enumerate(tenants if isinstance(tenants, list) else []):
        channels = tenant.get("channels") if isinstance(tenant, dict) else None
        for ci, block in enumerate(channels if isinstance(channels, list) else []):
            where: tuple[int | str, ...] = ("tenants", ti, "channels", ci)
            if not isinstance(block, dict) or not isinstance(block.get("kind"), str):
                continue  # pass 1 already reported it
            spec = kinds.get(block["kind"]) or channel_kind(block["kind"])
            if spec is None:
                problems.append((_loc((*where, "kind")), f"unknown channel kind {block['kind']!r}"))
                continue
            kinds[spec.kind] = spec
            try:
                typed[(ti, ci)] = spec.config_model.model_validate(block)
            except ValidationError as exc:
                problems += _problems(exc, where)

    if core is None:
        raise ConfigError(problems)
    # Pass 3: what the core needs of itself, then each connector over the blocks of its kind
    # that validated (so one file's problems all come out of one run of `flowbiz check`).
    config = _with_typed_channels(core, typed)
    problems += _semantic_problems(core)
    problems += _connector_problems(config, typed, kinds)
    if problems:
        raise ConfigError(problems)
    return config


def _with_typed_channels(
    core: GatewayConfig, typed: dict[tuple[int, int], ChannelConfig]
) -> GatewayConfig:
    """``core`` with each channel block as its connector's model (blocks that did not
    validate are left out; such a config is only ever checked, never returned)."""
    new_tenants = tuple(
        tenant.model_copy(
            update={
                "channels": tuple(
                    typed[(ti, ci)] for ci in range(len(tenant.channels)) if (ti, ci) in typed
                )
            }
        )
        for ti, tenant in enumerate(core.tenants)
    )
    return core.model_copy(update={"tenants": new_tenants})


def _connector_problems(
    config: GatewayConfig,
    typed: dict[tuple[int, int], ChannelConfig],
    kinds: dict[str, ChannelKind],
) -> list[tuple[str, str]]:
    """Every connector's ``check`` over the blocks of its kind, each with its path."""
    placed: dict[str, list[PlacedChannel[ChannelConfig]]] = {kind: [] for kind in kinds}
    for (ti, ci), channel in sorted(typed.items()):
        tenant = config.tenants[ti].id
        placed[channel.kind].append(PlacedChannel(tenant, channel, f"tenants.{ti}.channels.{ci}"))
    problems: list[tuple[str, str]] = []
    for kind, spec in kinds.items():
        if placed[kind]:
            problems += spec.check(placed[kind], config)
    return problems


def _with_raw_channels(data: dict[str, Any]) -> dict[str, Any]:
    tenants = data.get("tenants")
    if not isinstance(tenants, list):
        return data
    out = []
    for tenant in tenants:
        if isinstance(tenant, dict) and isinstance(tenant.get("channels"), list):
            tenant = dict(tenant)
            tenant["channels"] = [
                ChannelConfig.model_construct(kind=str(c["kind"]), id=str(c.get("id") or ""))
                if isinstance(c, dict) and isinstance(c.get("kind"), str)
                else c
                for c in tenant["channels"]
            ]
        out.append(tenant)
    return {**data, "tenants": out}


def _semantic_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for ti, tenant in enumerate(config.tenants):
        if tenant.id in seen:
            problems.append((f"tenants.{ti}.id", f"duplicate tenant id {tenant.id!r}"))
        seen.add(tenant.id)
        names: set[tuple[str, str]] = set()
        for ci, channel in enumerate(tenant.channels):
            if (channel.kind, channel.name) in names:
                problems.append(
                    (f"tenants.{ti}.channels.{ci}.id", f"duplicate channel {channel.name!r}")
                )
            names.add((channel.kind, channel.name))
        if tenant.plan not in config.plans:
            problems.append((f"tenants.{ti}.plan", f"unknown plan {tenant.plan!r}"))
    desks, desk_problems = plan_desks(config.handoff, config._tenant_desks())
    problems += desk_problems
    for desk in desks:
        ops = desk.operators
        home = config.tenant(ops.tenant)
        if home is None or home.channel(ops.channel.value) is None:
            problems.append(
                (
                    f"{desk.where}.operators",
                    f"tenant {ops.tenant!r} has no {ops.channel.value} channel",
                )
            )
        for served in sorted(desk.serves - seen):
            problems.append((f"{desk.where}.tenants", f"unknown tenant {served!r}"))
    store, lease_ms = config.store, config.pipeline.lease_seconds * 1000
    if store.replica_acks and store.replica_ack_timeout_ms >= lease_ms / 3:
        # A batch waiting for replicas holds up the process's other store calls, its lease
        # renewals (every third of a lease) among them.
        problems.append(
            (
                "store.replica_ack_timeout_ms",
                f"must be below a third of pipeline.lease_seconds ({lease_ms / 3:.0f} ms): "
                "a batch waiting for replicas holds up lease renewals",
            )
        )
    if not config.personas_dir.is_dir():
        problems.append(("personas_dir", f"not a directory: {config.personas_dir}"))
    return problems


def load_config(path: str | Path) -> GatewayConfig:
    """Read and validate a YAML configuration file."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([("(file)", f"cannot read {file}: {exc.strerror}")]) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([("(file)", f"not valid YAML: {exc}")]) from exc
    return parse_config(data, source=file.resolve())
