"""The RBAC matrix: every admin route against every kind of caller, 401 vs 403 exact.

The expected role and scope of each route are written out here, independently of the
route table, so a route whose protection changes makes this test fail.
"""

import aiohttp
import pytest
import pytest_asyncio

from gateway.admin.keys import Role, create_key, revoke_key
from gateway.admin.routes import OPERATIONS
from gateway.conversations import conversation_handle
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, running_gateway

V, OP, A = Role.VIEWER, Role.OPERATOR, Role.ADMIN
CONV = conversation_handle("acme/http/nobody")
T = "/v1/tenants/acme"
C = f"{T}/conversations/{CONV}"

# operation id: (method, path, minimum role, scope, body)
EXPECTED = {
    "getHealth": ("GET", "/v1/health", V, "any", None),
    "listKeys": ("GET", "/v1/keys", A, "any", None),
    "createKey": ("POST", "/v1/keys", A, "any", {"name": "k", "role": "viewer"}),
    "revokeKey": ("DELETE", "/v1/keys/0123456789abcdef", A, "any", None),
    "listTenants": ("GET", "/v1/tenants", V, "any", None),
    "getTenant": ("GET", T, V, "tenant", None),
    "putTenant": ("PUT", "/v1/tenants/gamma", A, "global", {"name": "Gamma"}),
    "disableTenant": ("DELETE", "/v1/tenants/gamma", A, "global", None),
    "setTenantPlan": ("PUT", f"{T}/plan", A, "global", {"plan": "free"}),
    "getTenantQuota": ("GET", f"{T}/quota", V, "tenant", None),
    "getTenantUsage": ("GET", f"{T}/usage", V, "tenant", None),
    "listConversations": ("GET", f"{T}/conversations", V, "tenant", None),
    "getConversation": ("GET", C, OP, "tenant", None),
    "exportConversation": ("GET", f"{C}/export", OP, "tenant", None),
    "eraseConversation": ("DELETE", C, A, "tenant", None),
    "sendMessage": ("POST", f"{C}/messages", OP, "tenant", {"text": "hi"}),
    "listReceipts": ("GET", f"{C}/receipts", V, "tenant", None),
    "listContacts": ("GET", f"{T}/contacts", OP, "tenant", None),
    "getContact": ("GET", f"{T}/contacts/nobody", OP, "tenant", None),
    "putContact": ("PUT", f"{T}/contacts/nobody", OP, "tenant", {"name": "Nobody"}),
    "deleteContact": ("DELETE", f"{T}/contacts/nobody", A, "tenant", None),
    "linkContactIdentity": (
        "POST",
        f"{T}/contacts/nobody/identities",
        OP,
        "tenant",
        {"channel": "http", "identity": "u-1"},
    ),
    "unlinkContactIdentity": (
        "DELETE",
        f"{T}/contacts/nobody/identities/http/u-1",
        OP,
        "tenant",
        None,
    ),
    "listPersonas": ("GET", "/v1/personas", V, "any", None),
    "putPersona": ("PUT", "/v1/personas/gamma", A, "global", {"display_name": "Gamma"}),
    "disablePersona": ("DELETE", "/v1/personas/gamma", A, "global", None),
    "listPersonaTools": ("GET", "/v1/personas/core/tools", V, "any", None),
    "reloadPersonas": ("POST", "/v1/personas/reload", A, "global", None),
    "listDeadLetters": ("GET", "/v1/dead-letters", V, "any", None),
    "getDeadLetter": ("GET", "/v1/dead-letters/0:1", OP, "any", None),
    "replayDeadLetter": ("POST", "/v1/dead-letters/0:1/replay", OP, "any", None),
    "discardDeadLetter": ("DELETE", "/v1/dead-letters/0:1", OP, "any", None),
    "listAuditEvents": ("GET", "/v1/audit", A, "any", None),
}

# caller: (role, tenant scope) — None for callers that must not authenticate at all
CALLERS = {
    "no-key": None,
    "garbage": None,
    "revoked": None,
    "viewer": (V, None),
    "operator": (OP, None),
    "admin": (A, None),
    "acme-viewer": (V, "acme"),
    "acme-admin": (A, "acme"),
    "beta-admin": (A, "beta"),
}


def test_every_route_is_in_the_matrix():
    """The matrix covers exactly the served operations (a new route must be added here)."""
    assert {op.operation_id for op in OPERATIONS} == set(EXPECTED)
    for op in OPERATIONS:
        method, _, role, scope, _ = EXPECTED[op.operation_id]
        assert (op.method, op.role, op.scope) == (method, role, scope)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(tmp_path_factory):
    with pytest.MonkeyPatch.context() as patch:
        for name, value in SECRETS.items():
            patch.setenv(name, value)
        folder = tmp_path_factory.mktemp("rbac")
        data = base_config(
            f"sqlite:///{folder}/g.db", tenants=[http_tenant(None), http_tenant(None, "beta")]
        )
        async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
            rt = gw.runtime
            tokens = {"no-key": None, "garbage": "fbk_0123456789abcdef_" + "x" * 43}
            _, revoked = await create_key(rt.store, rt.keyspace, name="old", role=A)
            await revoke_key(rt.store, rt.keyspace, revoked.split("_")[1])
            tokens["revoked"] = revoked
            for name, caller in CALLERS.items():
                if caller is not None:
                    role, tenant = caller
                    _, tokens[name] = await create_key(
                        rt.store, rt.keyspace, name=name, role=role, tenant=tenant
                    )
            yield gw, session, tokens


def _expected_denial(operation: str, caller: str) -> int | None:
    _, _, role, scope, _ = EXPECTED[operation]
    who = CALLERS[caller]
    if who is None:
        return 401
    caller_role, tenant = who
    if not caller_role.covers(role):
        return 403
    if tenant is not None and scope == "global":
        return 403
    if tenant is not None and scope == "tenant" and tenant != "acme":
        return 403
    return None


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("caller", list(CALLERS))
@pytest.mark.parametrize("operation", list(EXPECTED))
async def test_route_answers_caller_with_the_right_status(gateway, operation, caller):
    """401 without a valid key, 403 for a role or scope too small, otherwise let through."""
    gw, session, tokens = gateway
    method, path, _, _, body = EXPECTED[operation]
    if operation == "createKey" and CALLERS[caller] is not None:
        body = {**body, "tenant": CALLERS[caller][1]}
    headers = {} if tokens[caller] is None else {"Authorization": f"Bearer {tokens[caller]}"}
    async with session.request(method, gw.ops_url + path, json=body, headers=headers) as response:
        status = response.status
        payload = await response.read()
    denial = _expected_denial(operation, caller)
    if denial is None:
        assert status not in (401, 403), payload
        assert status < 500, payload
    else:
        assert status == denial, payload
        if denial == 401:
            assert response.headers["WWW-Authenticate"].startswith("Bearer")
