"""The gateway's configuration: one YAML file, validated by pydantic.

Credentials never live in the file: a secret field holds ``env:NAME`` and the value is read
from the environment at load time. Channel settings are validated by the model that each
connector package declares in its ``SPEC`` (found by :mod:`gateway.channel_config` without
importing the connectors here), so ``flowbiz check`` reports a problem in a Slack or LINE
block with the same precision as one in the core. Each connector then checks the blocks of
its kind together (``SPEC.check``: a Slack workspace or a LINE bot configured twice, a
WhatsApp number on two channels): what would make its webhooks ambiguous is a problem here,
never a traceback when the gateway starts.

:func:`load_config` collects *every* problem, each with the dotted path of its key in the
file, and raises one :class:`~gateway.errors.ConfigError`. Schema errors do not hide the
rest: :func:`inspect_config` runs the checks that need a validated model (an unknown plan,
a duplicate tenant, the desks, each connector's check) on the parts that validated
(:mod:`gateway.config_salvage`), and returns those parts for the checks above it (personas,
:mod:`gateway.config_check`). Every field's meaning is its ``Field`` description, from which
``flowbiz schema`` generates the JSON Schema and docs/configuration.md.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from gateway.channel_config import ChannelConfig, PlacedChannel, connector_package
from gateway.config_salvage import Removals, salvage
from gateway.config_sections import (
    ConsoleConfig,
    HttpServerConfig,
    OperationsListenerConfig,
    PipelineConfig,
    PlanConfig,
    StoreConfig,
    default_plans,
)
from gateway.errors import ConfigError
from gateway.handoff_config import Desk, HandoffConfig, plan_desks
from gateway.mcp_config import MCP_SERVER_NAME, McpServerConfig
from gateway.media_config import MediaConfig, MediaLimits
from gateway.netguard import check_url
from gateway.safety import SafetyConfig
from gateway.secret_ref import UNSET_SECRETS_PASS, Secret

__all__ = [
    "TENANT_ID_PATTERN",
    "ChannelCheck",
    "ChannelConfig",
    "ChannelKind",
    "ConfigInspection",
    "ConsoleConfig",
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
    "inspect_config",
    "inspect_file",
    "load_config",
    "parse_config",
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
"""A tenant id: it appears in URL paths and store keys, so it is kept to this alphabet."""


class TenantConfig(_Model):
    """One customer of the gateway: its channels, plan, default persona and desk."""

    id: Annotated[str, Field(pattern=TENANT_ID_PATTERN)] = Field(
        description="Lower-case letters, digits, `_` and `-`; unique among the tenants."
    )
    name: str = Field(default="", description="A name for people (the console, reports).")
    plan: str = Field(
        default="free",
        description="A key of `plans` (the built-in `free`, `pro` and `enterprise` only while "
        "`plans:` is not written).",
    )
    default_persona: str | None = Field(
        default=None,
        description="The persona that answers what no rule routes; null: "
        "`routing.default_persona`.",
    )
    persona_switch: bool | None = Field(
        default=None,
        description="Whether the switch command works here; null: `routing.persona_switch`.",
    )
    channels: tuple[ChannelConfig, ...] = Field(
        default=(),
        description="The tenant's channel blocks, each chosen by its `kind` (one section per "
        "kind below); a kind may appear more than once with distinct `id`s.",
    )
    notify_url: str | None = Field(
        default=None,
        description="Where quota warnings go, as signed webhooks (see docs/quotas.md).",
    )
    notify_secrets: tuple[Secret, ...] = Field(
        default=(), description="Sign the notify_url webhooks; newest first. Needed with it."
    )
    notify_allow_private: bool = Field(
        default=False,
        description="Let notify_url be a private or loopback address (the SSRF guard is on "
        "otherwise).",
    )
    handoff: HandoffConfig | None = Field(
        default=None, description="This tenant's own operators' desk (see docs/agents.md)."
    )
    media: MediaLimits | None = Field(
        default=None,
        description="This tenant's file limits and retention; null: the gateway's `media`.",
    )

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

    persona: str = Field(description="The persona this rule routes to.")
    tenant: str | None = Field(default=None, description="Only for this tenant id.")
    channel: str | None = Field(
        default=None, description="Only on channels of this kind (`slack`, `email`, …)."
    )
    keywords: tuple[str, ...] = Field(
        default=(), description="Any of them, as whole words, case-insensitive."
    )
    regex: str | None = Field(
        default=None, description="A Python regular expression searched in the text."
    )

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
    """Which persona answers (order: a switch, the sticky persona, the channel's hint, the
    rules, the tenant's default, this default; see gateway/routing.py)."""

    default_persona: str = Field(
        default="core", description="The persona that answers when nothing else decides."
    )
    sticky_seconds: float = Field(
        default=1800,
        ge=0,
        description="A conversation stays with the persona that last answered for this long.",
    )
    switch_command: str = Field(
        default="/persona",
        description="`/persona name` in a message switches to that persona.",
    )
    persona_switch: bool = Field(
        default=True,
        description="Whether the switch command works; tenants and channels may turn it off.",
    )
    switch_unknown_reply: str = Field(
        default="There is no such persona here. You can switch to: $available.",
        description="The answer to a switch to a persona that is unknown or not reachable "
        "here (the same bytes for both); `$available` lists what may be chosen.",
    )
    unreachable_reply: str | None = Field(
        default="Sorry, no assistant is available on this channel.",
        description="Sent when no persona may answer on a channel; null: silence.",
    )
    rules: tuple[RoutingRule, ...] = Field(
        default=(), description="Keyword and pattern rules, first match wins."
    )


class GatewayConfig(_Model):
    """``gateway.yaml``: secrets as ``env:NAME``; relative paths are relative to the file."""

    store: StoreConfig = Field(default=StoreConfig(), description="Where everything is kept.")
    http: HttpServerConfig = Field(default=HttpServerConfig(), description="The listeners.")
    pipeline: PipelineConfig = Field(
        default=PipelineConfig(), description="Timeouts, retries, leases and concurrency."
    )
    personas_dir: Path = Field(
        default=Path("agents/personas"),
        description="The folder of persona files (`*.yaml`), relative to this file.",
    )
    routing: RoutingConfig = Field(default=RoutingConfig(), description="Who answers.")
    tenants: tuple[TenantConfig, ...] = Field(default=(), description="The gateway's tenants.")
    plans: dict[str, PlanConfig] = Field(
        default_factory=default_plans,
        description="Plans by name. Written, they replace the built-in `free`, `pro` and "
        "`enterprise` (which have no limits): every tenant's plan must then be listed here.",
    )
    safety: SafetyConfig = Field(
        default=SafetyConfig(),
        description="The pre-check before any agent: card numbers, pasted secrets.",
    )
    handoff: HandoffConfig | None = Field(
        default=None,
        description="A desk serving the tenants it lists (default: its operators' tenant); "
        "no desk when absent.",
    )
    media: MediaConfig = Field(
        default=MediaConfig(),
        description="Files sent and received: where they are kept, limits, signed links.",
    )
    mcp_servers: dict[Annotated[str, Field(pattern=MCP_SERVER_NAME)], McpServerConfig] = Field(
        default_factory=dict,
        description="Model Context Protocol servers by name; LLM personas grant their tools "
        'as `mcp:<server>/<tool>` (docs/agents.md, "MCP tools").',
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="The least level logged (JSON lines on stderr, see below); `debug` also "
        "writes full conversation keys.",
    )
    source: SkipJsonSchema[Path | None] = None  # the file read, set by the loader (never in it)

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


def _resolve_relative(data: dict[str, Any], base: Path) -> None:
    """Paths in the file are relative to the file, not to the working directory."""
    personas = data.get("personas_dir")
    if isinstance(personas, str) and not Path(personas).is_absolute():
        data["personas_dir"] = str(base / personas)
    media = data.setdefault("media", {})
    if isinstance(media, dict):  # the default folder too sits next to the file
        folder = media.get("dir", "media")
        if isinstance(folder, str) and not Path(folder).is_absolute():
            media["dir"] = str(base / folder)
    store = data.get("store")
    if isinstance(store, dict):
        url = store.get("url")
        if (
            isinstance(url, str)
            and url.startswith("sqlite://")
            and not url.startswith("sqlite:///")
        ):
            store["url"] = "sqlite:///" + str(base / url.removeprefix("sqlite://"))


@dataclass(frozen=True, slots=True)
class ConfigInspection:
    """Everything one look at a configuration found: its problems, each at its path in the
    file, and the model of the parts that validated (for the checks that need one)."""

    problems: list[tuple[str, str]]
    # The parts that validated: a key with a schema error holds its default, a secret whose
    # variable is not set is empty, a tenant or a channel block that could not validate is
    # left out. Only ever checked, never served.
    config: GatewayConfig | None
    removals: Removals  # maps the salvaged model's paths back to the file's

    def add(self, problems: Sequence[tuple[str, str]]) -> None:
        """Problems found on :attr:`config`, at the file's paths; those at a key that holds a
        default only because the file's value was refused are not reported twice."""
        for path, message in problems:
            in_file = self.removals.original(path)
            if not self.removals.shadowed(in_file):
                self.problems.append((in_file, message))


def parse_config(data: Any, *, source: Path | None = None) -> GatewayConfig:
    """Validate already-loaded YAML data; raise ConfigError with every problem found."""
    inspection = inspect_config(data, source=source)
    if inspection.problems or inspection.config is None:
        raise ConfigError(inspection.problems)
    return inspection.config


def inspect_config(data: Any, *, source: Path | None = None) -> ConfigInspection:
    """Every problem of already-loaded YAML data in one pass: the core's and each channel
    block's schema errors, then what can still be judged on the parts that validated."""
    if not isinstance(data, dict):
        problem = ("(root)", "the configuration must be a mapping")
        return ConfigInspection([problem], None, Removals())
    data = dict(data)
    # ``source`` is the loader's note of the file read, never a key of the file.
    written = [("source", "Extra inputs are not permitted")] if "source" in data else []
    data.pop("source", None)
    if source is not None:
        _resolve_relative(data, source.parent)
        data["source"] = str(source)

    # Pass 1: core fields, with channel blocks seen only as their shared fields.
    core = salvage(
        lambda d: GatewayConfig.model_validate(_with_raw_channels(d)),
        data,
        lenient=lambda d: _lenient_core(_with_raw_channels(d)),
    )
    inspection = ConfigInspection(written + core.problems, None, core.removals)

    # Pass 2: each channel block against its connector's own model.
    typed: dict[tuple[int, int], ChannelConfig] = {}
    kinds: dict[str, ChannelKind] = {}
    tenants = data.get("tenants")
    for ti, tenant in enumerate(tenants if isinstance(tenants, list) else []):
        if isinstance(tenant, TenantConfig):
            # Validated already (a tenant of the file, checked again beside tenants defined
            # through the admin API, see gateway/tenant_overlay.py): its blocks are typed.
            for ci, block in enumerate(tenant.channels):
                typed[(ti, ci)] = block
                spec = kinds.get(block.kind) or channel_kind(block.kind)
                if spec is not None:  # it validated, so its kind is installed
                    kinds[spec.kind] = spec
            continue
        channels = tenant.get("channels") if isinstance(tenant, dict) else None
        for ci, block in enumerate(channels if isinstance(channels, list) else []):
            where: tuple[int | str, ...] = ("tenants", ti, "channels", ci)
            if not isinstance(block, dict) or not isinstance(block.get("kind"), str):
                continue  # pass 1 already reported it
            spec = kinds.get(block["kind"]) or channel_kind(block["kind"])
            if spec is None:
                problem = (_loc((*where, "kind")), f"unknown channel kind {block['kind']!r}")
                inspection.problems.append(problem)
                continue
            kinds[spec.kind] = spec
            model = spec.config_model
            lenient = partial(model.model_validate, context=UNSET_SECRETS_PASS)
            salvaged = salvage(model.model_validate, block, lenient=lenient)
            inspection.problems.extend(
                (_loc(where) + ("" if path == "(root)" else f".{path}"), message)
                for path, message in salvaged.problems
            )
            core.removals.merge(salvaged.removals, tuple(str(w) for w in where))
            if salvaged.model is not None:
                typed[(ti, ci)] = salvaged.model

    if core.model is None:
        return inspection
    # Pass 3: what the core needs of itself, then each connector over the blocks of its kind,
    # on what validated (so one file's problems all come out of one run of `flowbiz check`).
    config = _with_typed_channels(core.model, typed, core.removals)
    inspection = ConfigInspection(inspection.problems, config, core.removals)
    inspection.add(_semantic_problems(config))
    inspection.add(_connector_problems(config, kinds))
    return inspection


def _lenient_core(data: dict[str, Any]) -> GatewayConfig:
    return GatewayConfig.model_validate(data, context=UNSET_SECRETS_PASS)


def _with_typed_channels(
    core: GatewayConfig, typed: dict[tuple[int, int], ChannelConfig], removals: Removals
) -> GatewayConfig:
    """``core`` with each channel block as its connector's model; blocks that did not
    validate are left out, and ``removals`` learns which of the file's blocks remain."""
    new_tenants = []
    for position, tenant in enumerate(core.tenants):
        ti = int(removals.to_file(("tenants", str(position)))[1])
        kept = sorted(ci for t, ci in typed if t == ti)
        removals.keep(("tenants", str(ti), "channels"), kept)
        channels = tuple(typed[(ti, ci)] for ci in kept)
        new_tenants.append(tenant.model_copy(update={"channels": channels}))
    return core.model_copy(update={"tenants": tuple(new_tenants)})


def _connector_problems(
    config: GatewayConfig, kinds: dict[str, ChannelKind]
) -> list[tuple[str, str]]:
    """Every connector's ``check`` over the blocks of its kind, each with its path."""
    placed: dict[str, list[PlacedChannel[ChannelConfig]]] = {kind: [] for kind in kinds}
    for ti, tenant in enumerate(config.tenants):
        for ci, channel in enumerate(tenant.channels):
            where = f"tenants.{ti}.channels.{ci}"
            placed[channel.kind].append(PlacedChannel(tenant.id, channel, where))
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
    """Read and validate a YAML configuration file; ConfigError lists every problem."""
    inspection = inspect_file(path)
    if inspection.problems or inspection.config is None:
        raise ConfigError(inspection.problems)
    return inspection.config


def inspect_file(path: str | Path) -> ConfigInspection:
    """:func:`inspect_config` of a YAML file (an unreadable file is its one problem)."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        problem = ("(file)", f"cannot read {file}: {exc.strerror}")
        return ConfigInspection([problem], None, Removals())
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        return ConfigInspection([("(file)", f"not valid YAML: {exc}")], None, Removals())
    return inspect_config(data, source=file.resolve())
