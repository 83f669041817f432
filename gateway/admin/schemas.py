"""Request and response bodies of the admin API (they are also its OpenAPI schemas)."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from agents.persona import Persona
from agents.webhook_answer import BotAttachment, BotCard
from gateway.admin.keys import Role
from gateway.audit import AuditEvent
from gateway.config import TENANT_ID_PATTERN, PlanConfig
from gateway.contacts.model import CONTACT_ID_PATTERN, IDENTITY_PATTERN, MAX_NAME
from gateway.deadletters import DeadLetter
from gateway.models import Button, Channel, DeliveryReceipt, OptionList
from gateway.quotas import QuotaStatus
from gateway.state import HistoryEntry
from gateway.usage import UsageRow

TENANT_PATTERN = TENANT_ID_PATTERN
PERSONA_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
HANDLE_PATTERN = r"^[A-Za-z0-9_-]{1,2048}$"
DEAD_LETTER_PATTERN = r"^[0-9]{1,4}:[0-9]{1,20}(-[0-9]{1,20})?$"
CURSOR_PATTERN = r"^[0-9]{1,20}(-[0-9]{1,20})?$"
CHANNEL_PATTERN = "^(" + "|".join(c.value for c in Channel) + ")$"


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Problem(_Out):
    path: str = Field(description="The key's dotted path, tenants named by id.")
    message: str


class ErrorBody(_Out):
    error: str
    message: str
    problems: list[Problem] | None = Field(
        default=None, description="Every problem found (a tenant definition the check refused)."
    )


# -- keys ------------------------------------------------------------------------------------------
class KeyView(_Out):
    id: str
    name: str
    role: Role
    tenant: str | None
    created_at: datetime
    created_by: str
    revoked_at: datetime | None


class KeyList(_Out):
    keys: list[KeyView]


class KeyCreate(_In):
    name: str = Field(min_length=1, max_length=100)
    role: Role
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)


class KeyCreated(_Out):
    key: KeyView
    token: str = Field(description="The secret token. Shown only in this response.")


# -- tenants ---------------------------------------------------------------------------------------
class ChannelView(_Out):
    kind: str
    id: str


class TenantView(_Out):
    id: str
    name: str
    plan: str
    configured_plan: str
    default_persona: str | None
    channels: list[ChannelView]
    notify_url: str | None
    limits: PlanConfig


class TenantList(_Out):
    tenants: list[TenantView]


class TenantDefinition(_In):
    """A tenant block as ``gateway.yaml`` holds it (see docs/configuration.md, ``tenants``).

    Only its shape is read here: the whole configuration with it in place is checked as the
    file is (every problem, gateway/tenant_overlay.py) before anything is stored. Secrets are
    ``env:NAME`` references, never values.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    id: str | None = Field(default=None, description="When given, the path's tenant id.")
    name: str = ""
    plan: str = "free"
    default_persona: str | None = None
    persona_switch: bool | None = None
    channels: list[dict[str, Any]] = Field(
        default_factory=list, max_length=64, description="Channel blocks, each by its `kind`."
    )
    notify_url: str | None = None
    notify_secrets: list[str] = Field(default_factory=list, max_length=8)
    notify_allow_private: bool = False
    handoff: dict[str, Any] | None = None
    media: dict[str, Any] | None = None  # checked as the file's tenant media block


class PersonaDefinition(Persona):
    """A persona as its YAML file holds it (see docs/agents.md), as JSON.

    Checked with every other persona and the configuration before anything is stored
    (gateway/persona_overlay.py); a persona defined here may not act on the host (no host
    tool, ``stdio`` MCP server, ``knowledge_dir`` or ``allow_private``; no environment
    variable sent where no persona file sends it).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    name: str | None = Field(  # type: ignore[assignment]  # optional here: the path names it
        default=None, pattern=PERSONA_PATTERN, description="When given, the path's persona."
    )


class PlanChange(_In):
    plan: str = Field(min_length=1, max_length=100)


class UsageReport(_Out):
    tenant: str
    since: date | None
    until: date | None
    rows: list[UsageRow]
    totals: dict[str, int]


QuotaView = QuotaStatus


# -- conversations ---------------------------------------------------------------------------------
class ConversationSummary(_Out):
    id: str = Field(description="Opaque handle naming the conversation in this API")
    channel: str
    conversation_id: str
    thread: str | None
    persona: str | None
    last_inbound_at: datetime | None
    updated_at: datetime


class ConversationList(_Out):
    conversations: list[ConversationSummary]


class ConversationView(_Out):
    id: str
    tenant: str
    channel: str
    conversation_id: str
    thread: str | None
    persona: str | None
    persona_until: datetime | None
    last_inbound_at: datetime | None
    history: list[HistoryEntry]
    facts: dict[str, Any]


class KeptFile(_Out):
    """A file the gateway kept from the conversation (its bytes in the blob store)."""

    id: str
    content_type: str  # the type its bytes were judged to be
    size: int
    sha256: str
    name: str | None
    created_at: datetime
    url: str = Field(description="A signed link to the bytes; it expires (media.link_ttl_seconds).")


class ConversationExport(_Out):
    conversation: dict[str, Any] | None
    names: list[dict[str, Any]] = []  # the participants' names as their platforms gave them
    contacts: list[dict[str, Any]] = []  # the participants' contacts (identities, emails)
    state: dict[str, Any] | None
    replies: list[dict[str, Any]]
    receipts: list[dict[str, Any]]
    notes: list[dict[str, Any]] = []  # operators' notes (console), oldest first
    files: list[KeptFile] = []  # the kept files, oldest first
    exported_at: datetime


class EraseResult(_Out):
    erased: bool
    keys_deleted: int
    stream_entries_deleted: int
    files_deleted: int = 0  # kept files deleted from the blob store
    contacts_changed: int = 0


class ProactiveMessage(_In):
    """A message to send now; its rich parts obey the rules of a webhook bot's answer
    (docs/agents.md): files by public https URL or by a blob of this conversation."""

    text: str = Field(min_length=1, max_length=20_000)
    persona: str | None = Field(default=None, pattern=PERSONA_PATTERN)
    buttons: list[Button] = Field(default_factory=list, max_length=10)
    quick_replies: list[Button] = Field(default_factory=list, max_length=13)
    cards: list[BotCard] = Field(default_factory=list, max_length=10)
    options: OptionList | None = None
    attachments: list[BotAttachment] = Field(default_factory=list, max_length=10)


class Accepted(_Out):
    id: str
    idempotency_key: str


class ReceiptList(_Out):
    receipts: list[DeliveryReceipt]


# -- personas --------------------------------------------------------------------------------------
class PersonaView(_Out):
    name: str
    display_name: str
    description: str
    agent: str
    tools: list[str]
    prompts: dict[str, int] = Field(description="prompt name → the version in use")


class PersonaList(_Out):
    personas: list[PersonaView]


class ToolView(_Out):
    name: str


class ToolList(_Out):
    persona: str
    tools: list[ToolView]


class ReloadResult(_Out):
    personas: list[str]
    version: int


# -- dead letters ----------------------------------------------------------------------------------
class DeadLetterView(_Out):
    handle: str
    letter: DeadLetter


class DeadLetterList(_Out):
    dead_letters: list[DeadLetterView]


class ReplayResult(_Out):
    handle: str
    replayed: bool


# -- audit and health ------------------------------------------------------------------------------
class AuditItem(_Out):
    cursor: str
    event: AuditEvent


class AuditList(_Out):
    events: list[AuditItem]


class ConsumerHealth(_Out):
    role: str
    running: bool
    partitions: list[int]


class Health(_Out):
    """The gateway's health. While the store is unreachable no key can be checked, so the
    answer is ``degraded`` with only ``role`` and ``store`` filled in (the rest null)."""

    status: Literal["ok", "degraded"]
    role: str
    store: Literal["ok", "unreachable"]
    store_error: str | None
    consumers: list[ConsumerHealth] | None
    connectors: list[str] | None
    personas: int | None
    personas_version: int | None


# -- query strings ---------------------------------------------------------------------------------
class _Query(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class LimitQuery(_Query):
    limit: int = Field(default=100, ge=1, le=1000)


def _iso_day(value: Any) -> Any:
    # Query strings arrive as text; lax parsing would take "0" for 1970-01-01.
    if isinstance(value, str) and re.fullmatch(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", value) is None:
        raise ValueError("a day is written YYYY-MM-DD")
    return value


IsoDay = Annotated[date, BeforeValidator(_iso_day)]


class UsageQuery(_Query):
    since: IsoDay | None = None
    until: IsoDay | None = None


class DeadLetterQuery(_Query):
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)
    limit: int = Field(default=100, ge=1, le=1000)


class AuditQuery(_Query):
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN)
    after: str | None = Field(default=None, pattern=CURSOR_PATTERN)
    limit: int = Field(default=100, ge=1, le=1000)


# -- contacts --------------------------------------------------------------------------------------
class ContactQuery(_Query):
    limit: int = Field(default=100, ge=1, le=1000)
    after: str | None = Field(
        default=None,
        pattern=CONTACT_ID_PATTERN,
        description="The `next` of the previous page: contacts after this id.",
    )


class ContactIdentityBody(_In):
    channel: Channel = Field(description="The channel the id belongs to.")
    identity: str = Field(
        pattern=IDENTITY_PATTERN,
        description="The sender id messages carry there: a Slack user id, a LINE user id, "
        "`whatsapp:+…`, an email address, an HTTP client's user id.",
    )


class ContactDefinition(_In):
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_NAME,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="The name operators and agents see for the person.",
    )
    emails: list[str] = Field(
        default_factory=list,
        max_length=20,
        description="Addresses of the person (lower-cased; each on one contact at most).",
    )


class ContactIdentityView(_Out):
    channel: str
    id: str


class ContactView(_Out):
    id: str
    tenant: str
    name: str | None
    identities: list[ContactIdentityView]
    emails: list[str]
    created_at: datetime
    updated_at: datetime


class ContactList(_Out):
    contacts: list[ContactView]
    next: str | None = Field(
        default=None, description="Pass as `after` for the next page; null on the last."
    )
