"""Slack files both ways: the kept files a reply carries are uploaded, the files people
send are fetched with the bot token — only from Slack's own file host.

Guarantees:

- Out: a kept file goes through Slack's external upload, in three calls whose failures mean
  different things: ``files.getUploadURLExternal`` and the POST of the bytes to the
  ``upload_url`` it answers share nothing (a failure there is retried safely: an upload that
  is never completed is dropped by Slack), ``files.completeUploadExternal`` shares the file
  in the conversation (a failure after it went out is ``outcome_unknown``, never resent
  blindly). The bytes are posted only to an ``upload_url`` on the configured files host
  (``files_base_url``). The caller records each upload as a part of the reply, so a retried
  reply never shares a file twice.
- In: :func:`file_fetch` gives the keeper a GET with ``Authorization: Bearer <bot token>``
  only for a URL on ``files_base_url`` (the parse already refused the others); anything
  else is None: nothing is fetched and no token leaves.
"""

from __future__ import annotations

import asyncio

import aiohttp
from slack_sdk.web.async_client import AsyncWebClient

from connectors.send_policy import (
    DeliveryFailure,
    PlatformAnswer,
    answer_error,
    map_delivery_errors,
)
from connectors.send_policy.slack import SLACK_CODES, read_slack
from connectors.slack.parse import file_url, on_host
from connectors.slack.workspace import Workspace
from gateway.errors import PermanentDeliveryError
from gateway.media import MediaFetch
from gateway.models import Attachment, SlackReplyContext
from gateway.observability import get_logger

__all__ = ["file_fetch", "upload_file"]

log = get_logger(__name__)


def file_fetch(ws: Workspace, attachment: Attachment) -> MediaFetch | None:
    """How to fetch an inbound Slack file, or None when it is not on Slack's file host."""
    url = file_url(attachment)
    if url is None:
        return None
    if not on_host(url, ws.config.files_base_url):
        log.warning("slack.file_host_refused", workspace=ws.label)
        return None
    return MediaFetch(url=url, headers={"Authorization": f"Bearer {ws.token}"})


async def upload_file(
    *,
    client: AsyncWebClient,
    http: aiohttp.ClientSession,
    ws: Workspace,
    ctx: SlackReplyContext,
    data: bytes,
    name: str,
    title: str,
) -> str | None:
    """Upload ``data`` and share it in the conversation (its thread, if any): the file id."""
    timeout = ws.config.request_timeout_seconds
    async with (
        map_delivery_errors("Slack", idempotent=True, read=[read_slack], codes=SLACK_CODES),
        asyncio.timeout(timeout),
    ):
        got = await client.files_getUploadURLExternal(filename=name, length=len(data))
    upload_url, file_id = got.get("upload_url"), got.get("file_id")
    if not isinstance(upload_url, str) or not isinstance(file_id, str):
        raise PermanentDeliveryError(
            "Slack gave no upload URL", code=DeliveryFailure.REJECTED, platform_code="no_upload_url"
        )
    if not on_host(upload_url, ws.config.files_base_url):
        log.warning("slack.upload_host_refused", workspace=ws.label)
        raise PermanentDeliveryError(
            "Slack's upload URL is not on the configured files host",
            code=DeliveryFailure.REJECTED,
            platform_code="upload_host_refused",
        )
    async with (
        map_delivery_errors("Slack upload", idempotent=True),
        asyncio.timeout(max(timeout, 30.0)),
        http.post(upload_url, data=data) as response,
    ):
        if response.status != 200:
            said = (await response.text())[:64].strip()
            raise answer_error(
                "Slack upload",
                PlatformAnswer(response.status, said or None, headers=response.headers),
                codes=SLACK_CODES,
            )
    # Sharing is the visible step: Slack has no idempotency key for it either.
    async with (
        map_delivery_errors("Slack", idempotent=False, read=[read_slack], codes=SLACK_CODES),
        asyncio.timeout(timeout),
    ):
        done = await client.files_completeUploadExternal(
            files=[{"id": file_id, "title": title}],
            channel_id=ctx.channel_id,
            thread_ts=ctx.thread_ts,
        )
    files = done.get("files")
    if isinstance(files, list) and files and isinstance(files[0], dict):
        shared = files[0].get("id")
        return shared if isinstance(shared, str) else file_id
    return file_id
