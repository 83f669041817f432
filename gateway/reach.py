"""Who may reach a persona: where a message arrived, and which personas may answer there.

A message arrives at a :class:`Point`: its tenant, its channel kind, the platform's address
of the channel where the platform gives one (the Slack channel id, the LINE bot's
destination, our WhatsApp number, our email address), whether the tenant marked that
channel ``internal: true``, and whether the switch command is on there. A persona is
reachable from a point when its ``access`` allows the tenant, the kind and the address, and
— for an internal-only persona (any host tool, unless its file says otherwise) — the point
is internal. Routing (gateway/routing.py) asks this of every persona it considers, for every
route reason; ``flowbiz check`` prints it per tenant and channel.

Which of a tenant's channel blocks a message came through is decided by
``ChannelConfig.serves``. When several blocks could have carried it, the point is internal
(and the switch on) only if it is so on all of them: when in doubt, the narrower answer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from agents.persona import Persona
from gateway.config import ChannelConfig, GatewayConfig, TenantConfig
from gateway.models import (
    EmailReplyContext,
    InboundMessage,
    LineReplyContext,
    SlackReplyContext,
    WhatsAppReplyContext,
)

__all__ = [
    "Point",
    "address_of",
    "block_point",
    "only_at",
    "point_of",
    "reachable",
    "reachable_names",
]


@dataclass(frozen=True, slots=True)
class Point:
    tenant: str
    kind: str
    address: str | None  # None where the platform gives none (HTTP), or for a whole block
    internal: bool
    switch: bool


def _normal(kind: str, address: str) -> str:
    if kind == "whatsapp":
        return address.removeprefix("whatsapp:")
    if kind == "email":
        return address.lower()
    return address


def address_of(context: object) -> str | None:
    """The platform's address of the channel a message arrived on, normalised."""
    if isinstance(context, SlackReplyContext):
        return context.channel_id
    if isinstance(context, LineReplyContext):
        return context.destination
    if isinstance(context, WhatsAppReplyContext):
        return _normal("whatsapp", context.to_address)
    if isinstance(context, EmailReplyContext):
        return _normal("email", context.to_address)
    return None


def _switch_on(config: GatewayConfig, tenant: TenantConfig | None, block: ChannelConfig) -> bool:
    if block.persona_switch is not None:
        return block.persona_switch
    if tenant is not None and tenant.persona_switch is not None:
        return tenant.persona_switch
    return config.routing.persona_switch


def point_of(config: GatewayConfig, message: InboundMessage) -> Point:
    conv = message.conversation
    kind = conv.channel.value
    context = message.reply_context
    tenant = config.tenant(conv.tenant)
    blocks = [
        c for c in (tenant.channels if tenant else ()) if c.kind == kind and c.serves(context)
    ]
    if blocks:
        switch = all(_switch_on(config, tenant, b) for b in blocks)
    else:
        switch = (
            tenant.persona_switch
            if tenant is not None and tenant.persona_switch is not None
            else config.routing.persona_switch
        )
    return Point(
        tenant=conv.tenant,
        kind=kind,
        address=address_of(context),
        internal=bool(blocks) and all(b.internal for b in blocks),
        switch=switch,
    )


def block_point(config: GatewayConfig, tenant: TenantConfig, block: ChannelConfig) -> Point:
    """A whole channel block, whatever address a message on it has (for ``flowbiz check``)."""
    return Point(
        tenant=tenant.id,
        kind=block.kind,
        address=None,
        internal=block.internal,
        switch=_switch_on(config, tenant, block),
    )


def _entry_matches(entry: str, point: Point) -> bool:
    kind, colon, address = entry.partition(":")
    if kind != point.kind:
        return False
    return not colon or (point.address is not None and _normal(kind, address) == point.address)


def reachable(persona: Persona, point: Point) -> bool:
    access = persona.access
    if access.tenants and point.tenant not in access.tenants:
        return False
    if access.channels and not any(_entry_matches(e, point) for e in access.channels):
        return False
    return point.internal or not persona.internal_only


def only_at(persona: Persona, point: Point) -> tuple[str, ...]:
    """For a whole block where ``persona`` is not reachable: the addresses where it is."""
    return tuple(
        e
        for e in persona.access.channels
        if e.partition(":")[0] == point.kind
        and ":" in e
        and reachable(persona, replace(point, address=_address_part(e)))
    )


def _address_part(entry: str) -> str:
    kind, _, address = entry.partition(":")
    return _normal(kind, address)


def reachable_names(personas: Mapping[str, Persona] | Iterable[Persona], point: Point) -> list[str]:
    """The personas reachable from ``point``, sorted by name."""
    values = personas.values() if isinstance(personas, Mapping) else personas
    return sorted(p.name for p in values if reachable(p, point))
