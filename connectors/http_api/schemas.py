"""The HTTP API channel's wire formats, as pydantic models, and their OpenAPI description.

Guarantee: :class:`HttpMessage` is the model the edge parses every inbound message with, and
the tests hold each served answer and each callback body to :class:`HttpAccepted`,
:class:`HttpReplies` and :class:`HttpReply` (all ``extra="forbid"``), so the document that
:func:`channel_openapi` builds from them describes what is served, and cannot drift from it.
The channel's routes are on the public listener; the admin document
(``/v1/openapi.json``, :mod:`gateway.admin.openapi`) includes them with that listener as
their server.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from gateway.config import TENANT_ID_PATTERN
from gateway.models import Attachment, Button, Card, OptionList, PersonaPresentation

__all__ = [
    "CHANNEL_TAG",
    "HttpAccepted",
    "HttpMessage",
    "HttpReplies",
    "HttpReply",
    "HttpUser",
    "channel_openapi",
]

CHANNEL_TAG = "HTTP channel"
_REF = "#/components/schemas/{model}"


class _Wire(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HttpUser(_Wire):
    """The customer, as the client's own system knows them."""

    id: str = Field(min_length=1, max_length=256, description="Stable id of the customer")
    name: str | None = Field(default=None, max_length=256, description="Display name")


class HttpMessage(_Wire):
    """``POST /v1/channels/http/{tenant}/messages``: one message from a customer."""

    conversation_id: str = Field(
        min_length=1, max_length=256, description="The client's id of the conversation"
    )
    event_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The client's id of this message; a repeat is a duplicate (deduped). "
        "Without it, a signed request is named by its signature, an API-key request is new.",
    )
    thread: str | None = Field(
        default=None, max_length=256, description="A thread inside the conversation"
    )
    user: HttpUser
    text: str = Field(default="", max_length=20_000, description="What the customer wrote")
    action: str | None = Field(
        default=None,
        max_length=2_000,
        description="The value of a button the customer pressed (instead of text)",
    )


class HttpAccepted(_Wire):
    """202: the message is stored and will be answered (or was a duplicate)."""

    id: str = Field(description="The gateway's id of the stored message")
    event_id: str
    duplicate: bool = Field(description="Seen before: acknowledged, not queued again")


class HttpReply(_Wire):
    """One reply: a callback's body, and an item of a poll's answer."""

    id: str
    tenant: str
    conversation_id: str
    thread: str | None
    in_reply_to: str | None = Field(description="The gateway's id of the message answered")
    persona: PersonaPresentation
    text: str
    buttons: list[Button]
    attachments: list[Attachment] = Field(
        description="Files: a kept one with a signed `url` served by the gateway, valid for "
        "`media.link_ttl_seconds` (fetch it soon; it is not renewed), or the agent's own "
        "https `url`; places and contact cards carry their content"
    )
    quick_replies: list[Button] = Field(
        default_factory=list, description="Choices offered until the customer's next message"
    )
    cards: list[Card] = Field(
        default_factory=list,
        description="Cards (several: a carousel); a card's image is linked as attachments are",
    )
    options: OptionList | None = Field(default=None, description="A list to pick one from")
    created_at: str = Field(description="ISO 8601 time the reply was made")
    idempotency_key: str = Field(description="The same on every retry of this reply")


class HttpReplies(_Wire):
    """``GET …/replies``: the retained replies after ``after``, oldest first."""

    replies: list[HttpReply]
    next: str | None = Field(description="Pass back as ``after`` to read on")


_ERRORS = {
    400: "`bad_payload`: not JSON, a missing or unknown field, no text or action, bad "
    "`wait`/`after`",
    401: "`missing_credentials`, `bad_api_key`, `missing_signature`, `malformed_signature`, "
    "`stale_signature`, `bad_signature`, `legacy_signature` or `replayed_signature`",
    404: "`unknown_tenant`: no HTTP channel for the tenant in the path",
    413: "`too_large`: the body is over the edge's limit",
    503: "The store is unreachable: retry (a poll signed afresh)",
}
_SECURITY: list[dict[str, list[str]]] = [{"channelKey": []}, {"channelSignature": []}]
_TEXT: dict[str, Any] = {"type": "string"}
_WAIT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 30}


def _param(
    name: str, where: str, schema: dict[str, Any], *, required: bool = False, about: str = ""
) -> dict[str, Any]:
    out = {"name": name, "in": where, "required": required, "schema": schema}
    return out | ({"description": about} if about else {})


_TENANT = _param("tenant", "path", {"type": "string", "pattern": TENANT_ID_PATTERN}, required=True)


def _answers(ok: int, ref: dict[str, str], errors: tuple[int, ...]) -> dict[str, Any]:
    body = {"application/json": {"schema": {"$ref": _REF.format(model="ChannelError")}}}
    out: dict[str, Any] = {
        str(ok): {"description": "OK", "content": {"application/json": {"schema": ref}}}
    }
    for status in errors:
        out[str(status)] = {"description": _ERRORS[status], "content": body}
    out["503"]["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
    return out


def channel_openapi(public_url: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The channel's ``paths``, ``webhooks`` and ``components`` for an OpenAPI 3.1 document,
    its routes served at ``public_url`` (the public listener)."""
    models: list[tuple[type[BaseModel], Any]] = [
        (HttpMessage, "validation"),
        (HttpAccepted, "serialization"),
        (HttpReplies, "serialization"),
        (HttpReply, "serialization"),
    ]
    refs, top = models_json_schema(models, ref_template=_REF)
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["ChannelError"] = {
        "type": "object",
        "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
        "required": ["error"],
    }
    servers = [{"url": public_url.rstrip("/"), "description": "the public listener"}]
    common = {"tags": [CHANNEL_TAG], "security": _SECURITY}
    paths = {
        "/v1/channels/http/{tenant}/messages": {
            "servers": servers,
            "post": {
                **common,
                "operationId": "httpChannelSendMessage",
                "summary": "Send a customer's message to the tenant's personas",
                "parameters": [_TENANT],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(HttpMessage, "validation")]}},
                },
                "responses": _answers(
                    202, refs[(HttpAccepted, "serialization")], (400, 401, 404, 413, 503)
                ),
            },
        },
        "/v1/channels/http/{tenant}/conversations/{conversation_id}/replies": {
            "servers": servers,
            "get": {
                **common,
                "operationId": "httpChannelReadReplies",
                "summary": "Read a conversation's replies after a cursor, waiting for one",
                "parameters": [
                    _TENANT,
                    _param("conversation_id", "path", _TEXT, required=True),
                    _param("after", "query", _TEXT, about="The `next` of the last answer"),
                    _param("wait", "query", _WAIT, about="Seconds to wait for a reply"),
                    _param("thread", "query", _TEXT),
                ],
                "responses": _answers(
                    200, refs[(HttpReplies, "serialization")], (400, 401, 404, 503)
                ),
            },
        },
    }
    webhooks = {
        "httpChannelReply": {
            "post": {
                "tags": [CHANNEL_TAG],
                "operationId": "httpChannelReplyCallback",
                "summary": "A reply, POSTed to the channel's `callback_url`",
                "description": "Signed in `X-FlowBiz-Signature` (v2 over POST, the callback "
                "URL's path and query, and the body); dedupe on `X-FlowBiz-Idempotency-Key`. "
                "See docs/connectors/http.md.",
                "parameters": [
                    _param("X-FlowBiz-Signature", "header", _TEXT, required=True),
                    _param("X-FlowBiz-Idempotency-Key", "header", _TEXT, required=True),
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": refs[(HttpReply, "serialization")]}},
                },
                "responses": {
                    "2XX": {"description": "Taken; anything else is retried or dead-lettered"}
                },
            }
        }
    }
    components = {
        "schemas": schemas,
        "securitySchemes": {
            "channelKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "One of the channel's `api_keys` (server to server)",
            },
            "channelSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "X-FlowBiz-Signature",
                "description": "`t=<unix seconds>,v2=<hex>`: HMAC-SHA256 with a "
                "`signing_secrets` entry over the method, path, query, time and body",
            },
        },
    }
    return paths, webhooks, components
