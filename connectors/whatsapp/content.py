"""Twilio Content resources made from replies: created once per tenant, found again.

A rich reply part is sent as a Content resource (``ContentSid`` + ``ContentVariables`` on
the message create; :mod:`connectors.whatsapp.render` builds the definitions). Guarantees:

- one definition is created once per tenant and account: its SHA-256 (over the account,
  the types and the variables' names — never a message's text, which are variables) names
  it, in the store (:meth:`Keyspace.whatsapp_content` → the ``HX…`` SID) and at Twilio
  (``friendly_name`` ``flowbiz_<hash>``);
- with the store's record missing (a new store, a record lost) the account's contents are
  listed and one of that name is reused before any is created, so another process that
  created it first is not duplicated (two processes creating it in the same instant may
  make two alike; both work, the record keeps one);
- Twilio refusing a definition (a 4xx) raises :class:`ContentRefused`: the reply goes as
  numbered text instead. A 5xx, 429 or a network failure is a transient delivery error:
  the dispatcher retries the reply, and the parts that went out are not sent again.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from twilio.rest.content.v1.content import ContentList

from connectors.base import ConnectorContext
from connectors.send_policy import record_until_stored
from connectors.whatsapp.render import ContentSpec
from connectors.whatsapp.twilio_http import twilio_call
from gateway.errors import PermanentDeliveryError
from gateway.observability import get_logger

__all__ = ["ContentLibrary", "ContentRefused", "friendly_name"]

log = get_logger(__name__)

_LANGUAGE = "en"
_PAGE_SIZE = 100


class ContentRefused(Exception):
    """Twilio refused to create a content definition (a 4xx)."""

    def __init__(self, code: str | None) -> None:
        super().__init__(f"the Content API refused the definition ({code})")
        self.code = code


def friendly_name(digest: str) -> str:
    return f"flowbiz_{digest}"


class ContentLibrary:
    def __init__(self, context: ConnectorContext) -> None:
        self.context = context
        # SIDs this process has seen Twilio hold: a stored SID is asked about once per
        # process, since a content deleted at Twilio (or a store kept across accounts'
        # resets) would otherwise be sent by a SID Twilio no longer knows.
        self._confirmed: set[str] = set()

    async def sid(self, client: Any, *, tenant: str, account_sid: str, spec: ContentSpec) -> str:
        """The SID of ``spec``'s content in ``tenant``'s account: from the store, else
        found by name at Twilio, else created."""
        ctx = self.context
        digest = spec.digest(account_sid)
        key = ctx.keyspace.whatsapp_content(tenant, digest)
        kept = await ctx.store.get_record(key)
        events = ctx.metrics.channel_events
        if kept is not None:
            stored = kept.decode()
            if stored in self._confirmed or await self._still_there(client, stored):
                events.labels("whatsapp", "content_reused").inc()
                return stored
            events.labels("whatsapp", "content_gone").inc()
            log.warning("whatsapp.content_gone", kind=spec.kind, content_sid=stored)
            await ctx.store.delete([key])
        name = friendly_name(digest)
        try:
            sid = await self._find(client, name)
            if sid is None:
                sid = await self._create(client, name, spec)
                events.labels("whatsapp", "content_created").inc()
                log.info("whatsapp.content_created", kind=spec.kind, content_sid=sid)
            else:
                events.labels("whatsapp", "content_found").inc()
        except PermanentDeliveryError as exc:
            events.labels("whatsapp", "content_refused").inc()
            log.warning("whatsapp.content_refused", kind=spec.kind, code=exc.platform_code)
            raise ContentRefused(exc.platform_code) from exc
        # Twilio has it now: keep the record even through a store hiccup, or the next
        # message would list the account again.
        await record_until_stored(
            partial(ctx.store.put_record, key, sid.encode()), event="whatsapp.record_retry"
        )
        self._confirmed.add(sid)
        return sid

    async def _still_there(self, client: Any, sid: str) -> bool:
        """Whether Twilio still holds the content ``sid`` (one fetch, then remembered)."""
        try:
            async with twilio_call("Content API fetch", idempotent=True):
                await client.content.v1.contents(sid).fetch_async()
        except PermanentDeliveryError:
            return False
        self._confirmed.add(sid)
        return True

    async def _find(self, client: Any, name: str) -> str | None:
        async with twilio_call("Content API list", idempotent=True):
            contents = await client.content.v1.contents.stream_async(page_size=_PAGE_SIZE)
            async for content in contents:
                if content.friendly_name == name:
                    return str(content.sid)
        return None

    async def _create(self, client: Any, name: str, spec: ContentSpec) -> str:
        request = ContentList.ContentCreateRequest(
            {
                "friendly_name": name,
                "language": _LANGUAGE,
                # Sample values only: a message's own text never goes into the definition.
                "variables": dict.fromkeys(spec.variables, "-"),
                "types": spec.types,
            }
        )
        # Safe to repeat: a create that broke off is found by its name on the retry.
        async with twilio_call("Content API create", idempotent=True):
            created = await client.content.v1.contents.create_async(request)
        return str(created.sid)
