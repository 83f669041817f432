"""Slack reply drafts: one message, posted once, updated until it is the reply.

The worker shows a streaming agent's answer as it is written (gateway/drafts.py). Here the
first draft of the reply to an inbound message is a ``chat.postMessage`` where the reply
would go (channel and thread), as the persona; its ``ts`` is recorded at once under
``Keyspace.slack_draft(conversation, inbound id)``. Every later draft ``chat.update``s that
``ts``, and so does the reply itself: the first post of its first part (idempotency key
``<inbound id>:0``) updates the draft with the final text and blocks instead of posting.

Why this never answers twice:

- The record is per inbound message, in the store, so it holds across processes and
  restarts: a turn that ran again after a crash (its draft recorded, its commit not made)
  finds the ``ts`` and updates the same message; the dispatcher, wherever it runs, finds it.
- Before the first post the key is claimed (set-if-absent) with :data:`POSTING`; a second
  poster (a zombie worker running the same turn) finds the claim and shows no draft. A
  draft post whose answer never came (the claim without a ``ts``) is not retried: no more
  drafts for that message, and the reply posts as it would have without them.
- ``chat.update`` changes a message in place, so updating again (a retried delivery) is
  harmless, unlike a post. A draft someone deleted (``message_not_found``) cannot become
  the reply: the reply is then posted, as it would have been without drafts.

What is left: a worker killed between Slack taking the first draft and the record of its
``ts`` leaves that draft in the channel, and the reply is posted beside it (the same window
as a post and its delivery record, docs/architecture.md "Why exactly once holds").
"""

from __future__ import annotations

import asyncio
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from connectors.base import ConnectorContext
from connectors.send_policy import map_delivery_errors
from connectors.send_policy.slack import SLACK_CODES, read_slack
from connectors.slack.desk import is_slack_ts
from connectors.slack.render import Post, escape, post_fields, split_text
from connectors.slack.workspace import Workspace
from gateway.errors import PermanentDeliveryError
from gateway.models import (
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
    SlackReplyContext,
)
from gateway.observability import get_logger

__all__ = ["POSTING", "SlackDrafts", "takes_drafts"]

log = get_logger(__name__)

POSTING = b"-"  # the claim of the first draft's post, until its ts is recorded
# Slack's word for a draft that cannot become the reply: someone deleted it, or it is too
# old to edit. Nothing was changed, so the reply is posted instead.
_DRAFT_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})


def takes_drafts(ctx: SlackReplyContext, ws: Workspace, thread: str | None) -> bool:
    """Whether replies here are channel posts a draft can stand for: not an answer only one
    person sees (ephemeral, a command's ``response_url``), not a desk thread of ours."""
    if ctx.response_type == "ephemeral":
        return False
    if ctx.response_url is not None and ws.config.command_reply_via == "response_url":
        return False
    return thread is None or is_slack_ts(thread)


class SlackDrafts:
    def __init__(self, context: ConnectorContext) -> None:
        self.context = context

    def _key(self, conversation_key: str, inbound_id: str) -> str:
        return self.context.keyspace.slack_draft(conversation_key, inbound_id)

    async def show(
        self,
        client: AsyncWebClient,
        ws: Workspace,
        ctx: SlackReplyContext,
        message: InboundMessage,
        text: str,
        persona: PersonaPresentation,
    ) -> bool:
        """Post the draft of the reply to ``message``, or update the one recorded."""
        key = self._key(message.conversation.key, message.id)
        shown = split_text(escape(text), ws.config.max_message_chars)[0]
        ttl = self.context.config.store.dedupe_ttl_seconds
        store = self.context.store
        async with asyncio.timeout(ws.config.request_timeout_seconds):
            recorded = await store.get_record(key)
            if recorded is None and await store.claim(key, ttl=ttl, holder=POSTING):
                try:
                    result = await client.chat_postMessage(
                        channel=ctx.channel_id,
                        thread_ts=ctx.thread_ts,
                        text=shown,
                        username=persona.display_name,
                        icon_url=persona.icon_url,
                    )
                except SlackApiError:
                    # Slack answered no: nothing was posted, a later turn may try again.
                    await store.delete([key])
                    raise
                ts = result.get("ts")
                if not isinstance(ts, str):
                    return False
                await store.put_record(key, ts.encode(), ttl=ttl)
                log.info("slack.draft_posted")
                return True
            if recorded is None:
                recorded = await store.get_record(key)
            ts = (recorded or b"").decode()
            if not is_slack_ts(ts):
                return False  # another post of it is (or was) under way: no draft here
            await client.chat_update(channel=ctx.channel_id, ts=ts, text=shown)
            return True

    async def recorded(self, message: OutboundMessage) -> str | None:
        """The ``ts`` of the draft the first part of this reply replaces, if there is one."""
        if message.in_reply_to is None or message.idempotency_key != f"{message.in_reply_to}:0":
            return None
        recorded = await self.context.store.get_record(
            self._key(message.conversation.key, message.in_reply_to)
        )
        ts = (recorded or b"").decode()
        return ts if is_slack_ts(ts) else None

    async def replace(
        self,
        client: AsyncWebClient,
        ws: Workspace,
        ctx: SlackReplyContext,
        message: OutboundMessage,
        post: Post,
        ts: str,
    ) -> str | None:
        """Make the draft the reply's first post: its text, blocks and metadata. None when
        the draft is gone (deleted in Slack): the caller then posts the reply."""
        fields: dict[str, Any] = post_fields(message, post)
        try:
            # An update is idempotent (the same content again changes nothing), so a
            # delivery whose answer was lost may be retried, unlike a post.
            async with (
                map_delivery_errors("Slack", idempotent=True, read=[read_slack], codes=SLACK_CODES),
                asyncio.timeout(ws.config.request_timeout_seconds),
            ):
                await client.chat_update(
                    channel=ctx.channel_id,
                    ts=ts,
                    text=fields["text"],
                    blocks=fields["blocks"] or [],
                    metadata={
                        "event_type": "flowbiz_reply",
                        "event_payload": {"idempotency_key": message.idempotency_key},
                    },
                )
        except PermanentDeliveryError as exc:
            if exc.platform_code not in _DRAFT_GONE:
                raise
            log.info("slack.draft_gone", code=exc.platform_code)
            return None
        log.info("slack.draft_replaced")
        return ts
