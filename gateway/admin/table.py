"""The admin API's route table: every operation declared once.

The router (:mod:`gateway.admin.routes`) mounts it and :mod:`gateway.admin.openapi` writes
``/v1/openapi.json`` from it, so the document cannot drift from what is served.
"""

from __future__ import annotations

from collections.abc import Mapping

from gateway.admin.handlers import (
    create_key,
    discard_dead_letter,
    erase,
    export,
    get_audit,
    get_conversation,
    get_conversations,
    get_dead_letter_view,
    get_dead_letters,
    get_personas,
    get_quota,
    get_receipts,
    get_tenant,
    get_tools,
    get_usage,
    health,
    list_keys,
    list_tenants,
    reload,
    replay_dead_letter,
    revoke_key,
    send_message,
    set_plan,
)
from gateway.admin.keys import Role
from gateway.admin.operation import Operation
from gateway.admin.personas import disable_persona, put_persona
from gateway.admin.schemas import (
    Accepted,
    AuditList,
    AuditQuery,
    ConversationExport,
    ConversationList,
    ConversationView,
    DeadLetterList,
    DeadLetterQuery,
    DeadLetterView,
    EraseResult,
    Health,
    KeyCreate,
    KeyCreated,
    KeyList,
    KeyView,
    LimitQuery,
    PersonaDefinition,
    PersonaList,
    PersonaView,
    PlanChange,
    ProactiveMessage,
    QuotaView,
    ReceiptList,
    ReloadResult,
    ReplayResult,
    TenantDefinition,
    TenantList,
    TenantView,
    ToolList,
    UsageQuery,
    UsageReport,
)
from gateway.admin.tenants import disable_tenant, put_tenant

__all__ = ["OPERATIONS", "OPERATIONS_BY_ID"]


# -- the table -------------------------------------------------------------------------------------
T = "/v1/tenants/{tenant}"
C = T + "/conversations/{conversation}"
P = "/v1/personas/{persona}"
V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN

OPERATIONS: tuple[Operation, ...] = (
    Operation("GET", "/v1/health", "getHealth", "Subsystem health", V, "any", health, Health,
              errors=(503,), tag="system"),
    Operation("GET", "/v1/keys", "listKeys", "List API keys (never their tokens)", A, "any",
              list_keys, KeyList, tag="keys"),
    Operation("POST", "/v1/keys", "createKey", "Create an API key; the token is shown once",
              A, "any", create_key, KeyCreated, status=201, body=KeyCreate, errors=(400, 422),
              mutating=True, tag="keys"),
    Operation("DELETE", "/v1/keys/{key_id}", "revokeKey", "Revoke an API key", A, "any",
              revoke_key, KeyView, errors=(404,), mutating=True, tag="keys"),
    Operation("GET", "/v1/tenants", "listTenants", "List tenants", V, "any", list_tenants,
              TenantList, tag="tenants"),
    Operation("GET", T, "getTenant", "Read a tenant", V, "tenant", get_tenant, TenantView,
              errors=(404,), tag="tenants"),
    Operation("PUT", T, "putTenant",
              "Define a tenant, replace its definition or enable it again (every process)", A,
              "global", put_tenant, TenantView, body=TenantDefinition, errors=(400, 404, 409, 422),
              mutating=True, tag="tenants"),
    Operation("DELETE", T, "disableTenant", "Disable a tenant (every process)", A, "global",
              disable_tenant, None, status=204, errors=(404, 409, 422), mutating=True,
              tag="tenants"),
    Operation("PUT", T + "/plan", "setTenantPlan", "Change a tenant's plan", A, "global",
              set_plan, TenantView, body=PlanChange, errors=(400, 404, 422), mutating=True,
              tag="tenants"),
    Operation("GET", T + "/quota", "getTenantQuota", "Quota status in the current window", V,
              "tenant", get_quota, QuotaView, errors=(404,), tag="tenants"),
    Operation("GET", T + "/usage", "getTenantUsage", "Usage per day, channel and persona", V,
              "tenant", get_usage, UsageReport, query=UsageQuery, errors=(400, 404),
              tag="tenants"),
    Operation("GET", T + "/conversations", "listConversations", "List conversations", V,
              "tenant", get_conversations, ConversationList, query=LimitQuery,
              errors=(400, 404), tag="conversations"),
    Operation("GET", C, "getConversation", "Read a conversation's state and history", OP,
              "tenant", get_conversation, ConversationView, errors=(404,),
              tag="conversations"),
    Operation("GET", C + "/export", "exportConversation", "Export a conversation as JSON", OP,
              "tenant", export, ConversationExport, errors=(404,), tag="conversations"),
    Operation("DELETE", C, "eraseConversation",
              "Erase a conversation everywhere in the store (GDPR)", A, "tenant", erase,
              EraseResult, errors=(404,), mutating=True, tag="conversations",
              redact=("conversation",)),
    Operation("POST", C + "/messages", "sendMessage", "Send a proactive message", OP, "tenant",
              send_message, Accepted, status=202, body=ProactiveMessage,
              errors=(400, 404, 422, 429), mutating=True, tag="conversations",
              redact=("conversation",)),
    Operation("GET", C + "/receipts", "listReceipts", "Delivery receipts of a conversation", V,
              "tenant", get_receipts, ReceiptList, errors=(404,), tag="conversations"),
    Operation("GET", "/v1/personas", "listPersonas", "List personas", V, "any", get_personas,
              PersonaList, tag="personas"),
    Operation("PUT", P, "putPersona",
              "Define a persona, replace its definition or enable it again (every process)", A,
              "global", put_persona, PersonaView, body=PersonaDefinition,
              errors=(400, 404, 409, 422), mutating=True, tag="personas"),
    Operation("DELETE", P, "disablePersona", "Disable a persona (every process)", A, "global",
              disable_persona, None, status=204, errors=(404, 409, 422), mutating=True,
              tag="personas"),
    Operation("GET", P + "/tools", "listPersonaTools",
              "Tools available to a persona", V, "any", get_tools, ToolList, errors=(404,),
              tag="personas"),
    Operation("POST", "/v1/personas/reload", "reloadPersonas",
              "Reload personas from disk in every process", A, "global", reload,
              ReloadResult, errors=(422,), mutating=True, tag="personas"),
    Operation("GET", "/v1/dead-letters", "listDeadLetters", "List dead letters", V, "any",
              get_dead_letters, DeadLetterList, query=DeadLetterQuery, errors=(400,),
              tag="dead-letters"),
    Operation("GET", "/v1/dead-letters/{handle}", "getDeadLetter", "Inspect a dead letter", OP,
              "any", get_dead_letter_view, DeadLetterView, errors=(404,), tag="dead-letters"),
    Operation("POST", "/v1/dead-letters/{handle}/replay", "replayDeadLetter",
              "Put a dead letter back in its queue", OP, "any", replay_dead_letter,
              ReplayResult, errors=(404, 409), mutating=True, tag="dead-letters"),
    Operation("DELETE", "/v1/dead-letters/{handle}", "discardDeadLetter",
              "Discard a dead letter", OP, "any", discard_dead_letter, None, status=204,
              errors=(404,), mutating=True, tag="dead-letters"),
    Operation("GET", "/v1/audit", "listAuditEvents", "Read the audit log", A, "any", get_audit,
              AuditList, query=AuditQuery, errors=(400,), tag="system"),
)  # fmt: skip
OPERATIONS_BY_ID: Mapping[str, Operation] = {op.operation_id: op for op in OPERATIONS}
