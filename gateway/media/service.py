"""What the rest of the gateway asks of its files: one :class:`MediaService` per process.

- The worker keeps an inbound message's files (:meth:`MediaService.keep_inbound`) right
  after the parse, before any agent sees the message.
- A connector sending an attachment asks for its bytes (:meth:`MediaService.read`: Slack's
  upload, an email's MIME part) or for a link the platform can fetch (:meth:`MediaService.link`:
  LINE, Twilio): a signed, expiring link for a kept blob, the agent's own ``https`` URL
  otherwise. An attachment with neither cannot be sent (:class:`MediaUnavailable`), and
  the connector degrades it to its text form.
- Agents that talk over HTTP (webhook bots) get links too (:meth:`MediaService.describe`).

The hourly sweep (:meth:`MediaService.sweep`) deletes what is older than each tenant's
retention; the conversation erase deletes the conversation's blobs
(:mod:`gateway.conversations`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from gateway.config import GatewayConfig
from gateway.media.blobs import BlobInfo, BlobNotFound, BlobStore
from gateway.media.keeper import MediaSource, keep_attachment
from gateway.media.links import MediaLinks
from gateway.metrics import Metrics
from gateway.models import Attachment, InboundMessage
from gateway.observability import get_logger

__all__ = ["MediaService", "MediaUnavailable"]

log = get_logger(__name__)


class MediaUnavailable(LookupError):
    """An outbound attachment with no kept blob and no public URL, or a blob gone."""


class MediaService:
    def __init__(
        self,
        *,
        config: Callable[[], GatewayConfig],
        blobs: BlobStore,
        links: MediaLinks,
        http: aiohttp.ClientSession,
        metrics: Metrics,
    ) -> None:
        # The configuration is read at each use: tenants changed at run time bring their
        # own limits (gateway/tenant_sync.py swaps the process's configuration).
        self._config = config
        self.blobs = blobs
        self.links = links
        self.http = http
        self.metrics = metrics

    async def keep_inbound(self, message: InboundMessage, source: object) -> InboundMessage:
        """``message`` with each file kept or refused; unchanged when there is nothing to
        fetch, downloads are off, or the connector cannot fetch its platform's files."""
        config = self._config()
        if not message.attachments or not config.media.download:
            return message
        if not isinstance(source, MediaSource):
            return message
        tenant = config.tenant(message.conversation.tenant)
        limits = config.media.limits_for(None if tenant is None else tenant.media)
        kept = tuple(
            [
                await keep_attachment(
                    message,
                    attachment,
                    source=source,
                    blobs=self.blobs,
                    http=self.http,
                    limits=limits,
                    metrics=self.metrics,
                )
                for attachment in message.attachments
            ]
        )
        if kept == message.attachments:
            return message
        return message.model_copy(update={"attachments": kept})

    async def read(self, attachment: Attachment) -> tuple[BlobInfo, bytes]:
        """The bytes of a kept outbound attachment."""
        if attachment.blob is None:
            raise MediaUnavailable("the attachment has no kept file")
        try:
            return await self.blobs.get(attachment.blob)
        except BlobNotFound:
            raise MediaUnavailable("the kept file is gone (erased or past retention)") from None

    def link(self, attachment: Attachment) -> str:
        """A URL a platform can fetch the attachment from."""
        if attachment.blob is not None:
            return self.links.url(attachment.blob)
        if attachment.url is not None and attachment.url.startswith("https://"):
            return attachment.url
        raise MediaUnavailable("the attachment has no kept file and no https url")

    def describe(self, attachment: Attachment, *, inbound: bool = False) -> dict[str, Any]:
        """The attachment as JSON for a party over HTTP (a webhook bot, a tenant's site):
        a kept file gets a signed, expiring ``url`` to its bytes. An inbound file's own
        ``url`` is the platform's (it needs our credentials) and is never handed out; an
        outbound one's public https ``url`` (an agent's) is passed on as it is."""
        data = attachment.model_dump(mode="json", exclude_none=True)
        data.pop("url", None)
        if attachment.blob is not None:
            data["url"] = self.links.url(attachment.blob)
        elif not inbound and attachment.url is not None and attachment.url.startswith("https://"):
            data["url"] = attachment.url
        return data

    async def sweep(self, *, now: datetime | None = None) -> int:
        """Delete kept files older than their tenant's retention (the gateway's for a tenant
        no longer configured); how many went. A tenant whose deletion fails is logged and
        the others are still swept; a store that cannot list its tenants raises OSError."""
        config = self._config()
        now = now or datetime.now(UTC)
        removed = 0
        for tenant_id in await self.blobs.tenants():
            tenant = config.tenant(tenant_id)
            limits = config.media.limits_for(None if tenant is None else tenant.media)
            cutoff = now - timedelta(days=limits.retention_days)
            try:
                removed += await self.blobs.delete_older_than(tenant_id, cutoff)
            except OSError as exc:
                log.warning("media.sweep_failed", tenant=tenant_id, error_type=type(exc).__name__)
        if removed:
            log.info("media.swept", removed=removed)
        return removed
