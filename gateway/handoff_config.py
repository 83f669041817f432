"""The handoff's configuration and the desks it declares: pure data, checked at load time.

A **desk** is one operators' conversation with its settings (:class:`HandoffConfig`), and
it serves a set of tenants. :func:`plan_desks` turns the ``handoff:`` blocks of a
configuration (one per tenant, one at the top level) into desks and reports every problem
with its path: a tenant served twice, an operators' conversation that is two desks', a
top-level desk without a tenant, a reply context its channel cannot use. It reads no store
and imports nothing above the models, so the configuration (:mod:`gateway.config`) can use
it; what the desks do at run time is :mod:`gateway.handoff`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from gateway.handoff_release import ReleaseCommand
from gateway.models import Channel, ConversationKey, ReplyContext

__all__ = [
    "CONSOLE_DESK",
    "REPLY_CONTEXT",
    "Desk",
    "HandoffConfig",
    "OperatorsTarget",
    "desk_threads",
    "plan_desks",
    "thread_name",
]

# The desk name of a handoff taken over in the console where no desk serves the tenant.
CONSOLE_DESK = "console"
REPLY_CONTEXT: TypeAdapter[ReplyContext] = TypeAdapter(ReplyContext)


class OperatorsTarget(BaseModel):
    """The operators' conversation: where handed-off customers are announced and relayed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str | None = Field(
        default=None,
        description="The operators' tenant; on a tenant's own desk that tenant, required on "
        "the top-level desk.",
    )
    channel: Channel = Field(description="The channel kind the operators use.")
    conversation_id: str = Field(description="The operators' conversation (a Slack channel id).")
    reply_context: dict[str, Any] = Field(
        default_factory=lambda: {"kind": "http"},
        description="What the operators' connector needs to post there (HTTP: nothing; "
        "Slack: `{kind: slack, team_id, channel_id}`).",
    )


class HandoffConfig(BaseModel):
    """An operators' desk: customers who ask for a person are relayed to it and back."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    operators: OperatorsTarget = Field(description="Where the operators are.")
    tenants: tuple[str, ...] = Field(
        default=(),
        description="Top level only: the tenants whose customers this desk serves; empty: the "
        "operators' own tenant alone (a tenant's own desk serves that tenant).",
    )
    command: str | None = Field(
        default="/human",
        description="A customer writing exactly this asks for a person; null: no command.",
    )
    release_command: ReleaseCommand | None = Field(
        default=None,
        description="What operators write to hand back; null: the desk channel's own "
        "(`!release` on Slack, `/release` on HTTP).",
    )
    operator_display_name: str = Field(
        default="Support team", description="The name customers see on operators' replies."
    )
    customer_notice: str = Field(
        default="I have asked a person from our team to take over. They will answer you here.",
        description="Sent to the customer when the handoff starts.",
    )
    released_notice: str | None = Field(
        default="You are back with the assistant. How else can I help?",
        description="Sent to the customer on release; null: nothing.",
    )
    history_in_announcement: int = Field(
        default=6, ge=0, description="Recent messages shown to the operators with a new handoff."
    )


@dataclass(frozen=True, slots=True)
class Desk:
    """One operators' conversation, its settings and the tenants whose customers it serves."""

    config: HandoffConfig
    operators: ConversationKey  # the operators' conversation (no thread)
    serves: frozenset[str]
    reply_context: ReplyContext
    where: str  # where it is declared in the configuration, for messages


def plan_desks(
    top: HandoffConfig | None, per_tenant: Iterable[tuple[int, str, HandoffConfig]]
) -> tuple[tuple[Desk, ...], list[tuple[str, str]]]:
    """The desks a configuration declares, and every problem with them (path, message).

    ``per_tenant`` holds ``(index, tenant id, block)`` for each tenant with a ``handoff:``.
    """
    desks: list[Desk] = []
    problems: list[tuple[str, str]] = []
    declared: list[tuple[str, HandoffConfig, str | None]] = [
        (f"tenants.{index}.handoff", block, tenant) for index, tenant, block in per_tenant
    ]
    if top is not None:
        declared.insert(0, ("handoff", top, None))
    served_by: dict[str, str] = {}
    desk_of: dict[str, str] = {}
    for where, block, own_tenant in declared:
        ops = block.operators
        if own_tenant is not None and block.tenants:
            problems.append(
                (
                    f"{where}.tenants",
                    "a tenant's own desk serves that tenant only; list several tenants on the "
                    "top-level handoff desk",
                )
            )
            continue
        ops_tenant = ops.tenant or own_tenant
        if ops_tenant is None:
            problems.append((f"{where}.operators.tenant", "the top-level desk must name a tenant"))
            continue
        serves = (own_tenant,) if own_tenant is not None else block.tenants or (ops_tenant,)
        operators = ConversationKey(
            tenant=ops_tenant, channel=ops.channel, conversation_id=ops.conversation_id
        )
        if operators.key in desk_of:
            problems.append(
                (
                    f"{where}.operators",
                    f"this operators' conversation is already the desk of {desk_of[operators.key]}"
                    "; one desk may serve several tenants (top-level handoff.tenants)",
                )
            )
            continue
        desk_of[operators.key] = where
        for tenant in serves:
            if tenant in served_by:
                problems.append(
                    (
                        where,
                        f"tenant {tenant!r} is already served by the desk at {served_by[tenant]}",
                    )
                )
            served_by[tenant] = where
        try:
            reply_context = REPLY_CONTEXT.validate_python(ops.reply_context)
        except ValueError as exc:
            problems.append((f"{where}.operators.reply_context", str(exc)))
            continue
        desks.append(
            Desk(
                config=block,
                operators=operators,
                serves=frozenset(serves),
                reply_context=reply_context,
                where=where,
            )
        )
    return tuple(desks), problems


def thread_name(customer_key: str) -> str:
    """The thread a desk opens for one customer: one per customer, named by a digest."""
    return "handoff-" + hashlib.sha256(customer_key.encode()).hexdigest()[:16]


def desk_threads(desks: Iterable[Desk], tenant: str, customer_key: str) -> list[ConversationKey]:
    """The operators' threads that relay customer ``customer_key`` of ``tenant`` (one per
    desk serving the tenant; whether it was ever opened is the store's to say)."""
    thread = thread_name(customer_key)
    return [
        desk.operators.model_copy(update={"thread": thread})
        for desk in desks
        if tenant in desk.serves
    ]
