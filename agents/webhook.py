"""The webhook agent: bring your own bot, in any language, behind an HTTPS URL.

For each message the gateway POSTs the normalised context (the message, the persona, recent
history, the channel's capabilities) to the bot's URL as JSON, signed like every FlowBiz
webhook (:mod:`gateway.signing`: ``X-FlowBiz-Signature: t=…,v1=…``, two ``v1`` entries while
a secret rotates). ``X-FlowBiz-Idempotency-Key`` carries the inbound message id, the same on
every retry, so the bot can answer a retry from its own cache.

The files of the message reach the bot as links: a kept file with a signed, expiring
``url`` served by the gateway (``GET /media/{blob}``), never the platform's own URL.

The bot answers either inline (``200`` with ``{"parts": [{"text": …, "buttons": […]}]}``, or
the shorthand ``{"text": …}``; a part may carry attachments, quick replies, cards and an
option list, checked by :mod:`agents.webhook_answer`) or with ``202 Accepted``: "I will
answer later", through the admin API's send-message route (``POST
/v1/tenants/{tenant}/conversations/{handle}/messages`` with an operator API key; ``handle``
is in the payload). ``204`` means "no reply".

Options::

    url: https://bot.example.com/flowbiz
    secrets_env: [BOT_SECRET, BOT_SECRET_OLD]   # environment variable names, newest first
    attempt_timeout_seconds: 5
    retries: 2                                  # extra tries on network errors, 408/429/5xx
    history: 10                                 # history turns sent along
    allow_private: false                        # SSRF guard: see below

The target URL is checked against SSRF by :mod:`gateway.netguard`: loopback, link-local,
private, reserved, multicast and unspecified addresses are refused, in any spelling and
behind IPv6 mappings (6to4, Teredo, NAT64), both in the URL itself and at connect time (so a
DNS answer that changes after validation is caught too). Only a persona whose options say
``allow_private: true`` (formerly ``allow_private_network``, still accepted) may reach them.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from agents.base import AgentContext, AgentReply
from agents.webhook_answer import BotAnswer, InvalidAnswer, checked_reply
from gateway.conversations import conversation_handle
from gateway.errors import AgentError
from gateway.models import Attachment
from gateway.netguard import (
    TargetRefusedError,
    refusal,
    refusal_reason,
    refused_by_guard,
    session_for,
)
from gateway.observability import get_logger
from gateway.send_policy import retry_after_seconds
from gateway.signing import SIGNATURE_HEADER, sign

__all__ = [
    "IDEMPOTENCY_HEADER",
    "TargetRefusedError",
    "WebhookAgent",
    "WebhookOptions",
    "context_payload",
    "refusal_reason",
]

log = get_logger(__name__)

IDEMPOTENCY_HEADER = "X-FlowBiz-Idempotency-Key"
ATTEMPT_HEADER = "X-FlowBiz-Attempt"
_MAX_RESPONSE_BYTES = 256 * 1024
_RETRY_STATUSES = frozenset({408, 425, 429})


class WebhookOptions(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str
    secrets_env: tuple[str, ...] = Field(min_length=1, max_length=2)
    attempt_timeout_seconds: float = Field(default=5, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    retry_base_seconds: float = Field(default=0.2, gt=0)
    history: int = Field(default=10, ge=0)
    allow_private: bool = False
    allow_private_network: bool = False  # the earlier name of allow_private

    @property
    def private_allowed(self) -> bool:
        return self.allow_private or self.allow_private_network

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("the bot URL must be an absolute http(s) URL")
        return value


def _attachment_json(attachment: Attachment, context: AgentContext) -> dict[str, Any]:
    """A received file as the bot sees it: a kept one with a signed, expiring ``url`` served
    by the gateway, a refused one with ``refused``. Where the platform keeps it (its ``url``,
    its ``extra``) needs the platform's credentials and is never handed out."""
    if context.media is not None:
        data = context.media.describe(attachment, inbound=True)
    else:
        # Not kept: an inbound file's url is always the platform's, https or not.
        data = attachment.model_dump(mode="json", exclude_none=True)
        data.pop("url", None)
    data.pop("extra", None)
    return data


def context_payload(context: AgentContext, *, history: int) -> dict[str, Any]:
    """The JSON a bot receives. Platform payloads, reply tokens and the platform's file
    URLs are never included."""
    message = context.message
    conv = message.conversation
    caps = context.capabilities
    turns = context.history[-history:] if history else ()
    return {
        "version": 1,
        "type": "message",
        "message": {
            "id": message.id,
            "event_id": message.event_id,
            "kind": message.kind.value,
            "text": message.text,
            "received_at": message.received_at.isoformat(),
            "sender": {"id": message.sender.id, "display_name": message.sender.display_name},
            "attachments": [_attachment_json(a, context) for a in message.attachments],
            "conversation": {
                "tenant": conv.tenant,
                "channel": conv.channel.value,
                "conversation_id": conv.conversation_id,
                "thread": conv.thread,
                "key": conv.key,
                # for answering later: POST /v1/tenants/{tenant}/conversations/{handle}/messages
                "handle": conversation_handle(conv.key),
            },
        },
        "persona": {"name": context.persona.name, "display_name": context.persona.display_name},
        "history": [
            {"role": t.role, "text": t.text, "at": t.at.isoformat(), "persona": t.persona}
            for t in turns
        ],
        "capabilities": {
            "buttons": caps.buttons,
            "threads": caps.threads,
            "max_text_length": caps.max_text_length,
            "markdown": caps.markdown,
            "attachments": bool(caps.media_out),
            "media_out": list(caps.media_out),
            "cards": caps.cards,
            "quick_replies": caps.quick_replies,
            "options": caps.options,
        },
        "variables": dict(context.variables),
        "contact": (
            None
            if context.contact is None
            else {
                "id": context.contact.id,
                "name": context.contact.name,
                "channels": list(context.contact.channels),
            }
        ),
    }


class WebhookAgent:
    def __init__(self, options: WebhookOptions) -> None:
        self.options = options
        # A literal address is judged here, before any message; names are judged on connect.
        self._literal_refusal = refusal(options.url)

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> WebhookAgent:
        return cls(WebhookOptions.model_validate(options))

    def _secrets(self) -> list[str]:
        found = [os.environ.get(name, "") for name in self.options.secrets_env]
        if not all(found):
            raise AgentError("a webhook signing secret is not set in the environment")
        return found

    async def respond(self, context: AgentContext) -> AgentReply:
        opts = self.options
        if self._literal_refusal is not None and not opts.private_allowed:
            log.warning("agent.webhook_refused", persona=context.persona.name, reason="ssrf")
            raise AgentError(f"bot URL refused: {self._literal_refusal}")
        body = json.dumps(context_payload(context, history=opts.history)).encode()
        secrets = self._secrets()
        async with session_for(allow_private=opts.private_allowed) as session:
            for attempt in range(1, opts.retries + 2):
                outcome = await self._attempt(session, body, secrets, context, attempt)
                if isinstance(outcome, AgentReply):
                    return outcome
                if attempt > opts.retries:
                    break
                delay = (
                    outcome if outcome is not None else opts.retry_base_seconds * 2 ** (attempt - 1)
                )
                await asyncio.sleep(delay)
        raise AgentError(f"the bot did not answer after {opts.retries + 1} tries")

    async def _attempt(
        self,
        session: aiohttp.ClientSession,
        body: bytes,
        secrets: list[str],
        context: AgentContext,
        attempt: int,
    ) -> AgentReply | float | None:
        """One POST. A reply, or the wait before the next try (None = the usual backoff)."""
        opts = self.options
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "FlowBiz-Gateway",
            SIGNATURE_HEADER: sign(secrets, body),  # signed per try: the timestamp stays fresh
            IDEMPOTENCY_HEADER: context.message.id,
            ATTEMPT_HEADER: str(attempt),
        }
        persona = context.persona.name
        try:
            async with session.post(
                opts.url,
                data=body,
                headers=headers,
                allow_redirects=False,  # a redirect could lead past the SSRF check
                timeout=aiohttp.ClientTimeout(total=opts.attempt_timeout_seconds),
            ) as response:
                status = response.status
                retry_after = response.headers.get("Retry-After")
                raw = await response.content.read(_MAX_RESPONSE_BYTES + 1)
        except aiohttp.ClientConnectorError as exc:
            refused = refused_by_guard(exc)
            if refused is not None:
                log.warning("agent.webhook_refused", persona=persona, reason="ssrf")
                raise AgentError(f"bot URL refused: {refused}") from exc
            log.warning("agent.webhook_retry", persona=persona, attempt=attempt, error="connect")
            return None
        except (aiohttp.ClientError, TimeoutError) as exc:
            error = "timeout" if isinstance(exc, TimeoutError) else type(exc).__name__
            log.warning("agent.webhook_retry", persona=persona, attempt=attempt, error=error)
            return None
        if status in (202, 204):
            log.info("agent.webhook_deferred" if status == 202 else "agent.webhook_silent")
            return AgentReply()
        if 200 <= status < 300:
            return await self._parse(raw, context)
        if status in _RETRY_STATUSES or status >= 500:
            log.warning("agent.webhook_retry", persona=persona, attempt=attempt, status=status)
            return retry_after_seconds(retry_after, cap=opts.attempt_timeout_seconds)
        raise AgentError(f"the bot answered {status}")

    @staticmethod
    async def _parse(raw: bytes, context: AgentContext) -> AgentReply:
        persona = context.persona.name
        if len(raw) > _MAX_RESPONSE_BYTES:
            log.warning("agent.webhook_invalid", persona=persona, reason="too_large")
            raise AgentError("the bot's answer is too large")
        if not raw.strip():
            return AgentReply()
        try:
            answer = BotAnswer.model_validate_json(raw)
        except ValidationError as exc:
            log.warning("agent.webhook_invalid", persona=persona, reason="invalid")
            raise AgentError(f"the bot's answer is not valid: {exc.error_count()} errors") from exc
        try:
            return await checked_reply(answer, context.message.conversation, context.media)
        except InvalidAnswer as exc:
            log.warning("agent.webhook_invalid", persona=persona, reason=exc.reason)
            raise
