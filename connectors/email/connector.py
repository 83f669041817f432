"""The email channel: an SMTP listener and IMAP mailboxes in, DKIM-signed SMTP replies out.

Inbound is two steps. The edge (:mod:`connectors.email.edge`; the SMTP listener in
:mod:`connectors.email.listener`, the IMAP poller in :mod:`connectors.email.imap`) reads
the header block only, screens, fixes the dedupe id and the thread, and appends the raw
mail through ``context.ingest.submit`` *before* the SMTP listener answers 250 or the IMAP
poller flags the message. Verification is the SMTP recipient check (only configured
addresses are accepted; the rest get 550 at RCPT) and, for IMAP, the mailbox login.
:meth:`EmailConnector.parse` (:mod:`connectors.email.parse`) reads the whole mail in the
worker.

Outcomes of one inbound message at the edge:

- ``ingested`` / ``duplicate`` (same Message-ID seen before: the core's dedupe);
- ``suppressed``: automatic mail (RFC 3834 and friends) or our own mail coming back. It
  is recorded in a bounded audit stream and counted, never ingested, so no agent answers it;
- ``quarantined``: hostile headers or MIME, or no From we could answer, kept with its
  reason (and the raw bytes) in a bounded quarantine stream for an operator.

In the worker, a mail whose body the parser refuses is dead-lettered with the reason.

Files in: the parse decodes each attachment and holds its bytes (:mod:`connectors.email.held`)
for :meth:`EmailConnector.media_fetch`, which the worker's media keeper calls right after.

Outbound: one reply per outbound message, threaded (In-Reply-To/References), marked
``Auto-Submitted: auto-replied``, limited per thread by a token bucket, DKIM-signed, sent
through the configured smarthost with aiosmtplib. SMTP 4xx is transient, 5xx permanent.
The text part is the shared numbered text; the HTML part (:mod:`connectors.email.rich`)
shows cards and offers each choice as a signed link (:mod:`connectors.email.actions`,
whose routes this connector mounts); kept files travel as MIME parts within a size budget
(:mod:`connectors.email.outgoing`).
No header of a reply comes unchecked from the customer's mail (see ``headers.py``): an
address we cannot write is a dead letter (``bad_address``), never a sent message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import aiosmtplib

from connectors.base import ChannelCapabilities, ConnectorContext, Pacing, Route
from connectors.email.actions import (
    ActionRefused,
    ActionSeal,
    ActionTicket,
    action_pages,
    derive_action_keys,
)
from connectors.email.compose import Reply, build_reply, reply_message_id
from connectors.email.config import (
    EmailAddressConfig,
    EmailChannelConfig,
    ImapConfig,
    OutboundSmtpConfig,
    ReplyRateConfig,
    SmtpListenerConfig,
)
from connectors.email.dkim_sign import DkimConfig
from connectors.email.edge import Mailbox, MailEdge
from connectors.email.headers import AddressRefused, HeaderBlockRefused, checked_address
from connectors.email.held import HeldFiles
from connectors.email.intake import InboundOutcome
from connectors.email.listener import smtp_factory
from connectors.email.outgoing import Outgoing, gather_files
from connectors.email.parse import (
    action_message,
    is_action,
    mail_bytes,
    mail_message,
    parsed_mail,
)
from connectors.email.parsing import MailHead, normalise_address
from connectors.email.rich import ChoiceLink, FileLine, render_html
from connectors.send_policy import DeliveryFailure, map_delivery_errors
from connectors.send_policy.smtp import read_smtp
from gateway.config import ChannelConfig, TenantConfig
from gateway.envelope import RawEvent
from gateway.errors import (
    EventParseError,
    PermanentDeliveryError,
)
from gateway.media import MediaFetch, MediaService
from gateway.media.links import load_link_keys
from gateway.models import (
    Attachment,
    Channel,
    DeliveryReceipt,
    EmailReplyContext,
    InboundMessage,
    OutboundMessage,
)
from gateway.observability import get_logger
from gateway.parts import plain_text

__all__ = [
    "DkimConfig",
    "EmailAddressConfig",
    "EmailChannelConfig",
    "EmailConnector",
    "ImapConfig",
    "InboundOutcome",
    "Mailbox",
    "OutboundSmtpConfig",
    "ReplyRateConfig",
    "SmtpListenerConfig",
    "render",
]

log = get_logger(__name__)

_IN_THREAD_FILE_BYTES = 64 * 1024


class EmailConnector:
    channel: ClassVar[Channel] = Channel.EMAIL
    capabilities: ClassVar[ChannelCapabilities] = ChannelCapabilities(
        buttons=True,  # as action links, where a public URL is configured
        threads=True,
        max_text_length=100_000,
        markdown=False,
        attachments=True,
        cards=True,
        quick_replies=True,
        options=True,
        media_out=("image", "video", "audio", "file"),
    )
    config_model: ClassVar[type[ChannelConfig]] = EmailChannelConfig

    def __init__(
        self,
        *,
        context: ConnectorContext,
        channels: Sequence[tuple[TenantConfig, ChannelConfig]],
    ) -> None:
        self.context = context
        self._mailboxes: dict[str, Mailbox] = {}
        self._channels: list[tuple[str, EmailChannelConfig]] = []
        for tenant, channel in channels:
            if not isinstance(channel, EmailChannelConfig):
                continue
            self._channels.append((tenant.id, channel))
            signer = channel.dkim.signer() if channel.dkim is not None else None
            for entry in channel.addresses:
                self._mailboxes.setdefault(
                    entry.address,
                    Mailbox(tenant.id, channel, entry.address, entry.persona, signer),
                )
        self.edge = MailEdge(context, self._mailboxes)
        self._servers: list[asyncio.Server] = []
        self._bound: dict[tuple[str, int], tuple[str, int]] = {}
        self._pollers: list[Any] = []
        self._held = HeldFiles()
        self._seals: dict[tuple[str, str], ActionSeal] = {}

    # -- lifecycle -------------------------------------------------------------------------------
    def routes(self) -> Sequence[Route]:
        return action_pages(self._open_ticket, self._count_action)

    async def start(self) -> None:
        from connectors.email.imap import ImapPoller  # the IMAP client is only needed with IMAP

        endpoints: dict[tuple[str, int], list[SmtpListenerConfig]] = {}
        for _, channel in self._channels:
            if channel.listener is not None:
                key = (channel.listener.host, channel.listener.port)
                endpoints.setdefault(key, []).append(channel.listener)
        loop = asyncio.get_running_loop()
        for (host, port), listeners in endpoints.items():
            server = await loop.create_server(smtp_factory(self.edge, listeners, loop), host, port)
            bound = server.sockets[0].getsockname()
            self._servers.append(server)
            self._bound[(host, port)] = (bound[0], bound[1])
            self.context.metrics.listener_up.labels(f"email-smtp:{host}:{port}").set(1)
            log.info("email.smtp_listening", host=bound[0], port=bound[1])
        for tenant, channel in self._channels:
            if channel.imap is not None:
                poller = ImapPoller(intake=self.edge, tenant=tenant, channel=channel)
                poller.start()
                self._pollers.append(poller)

    async def stop(self) -> None:
        for poller in self._pollers:
            await poller.stop()
        self._pollers.clear()
        for server in self._servers:
            server.close()
        for server in self._servers:
            await server.wait_closed()
        for host, port in self._bound:
            self.context.metrics.listener_up.labels(f"email-smtp:{host}:{port}").set(0)
        self._servers.clear()

    def listener_address(self, tenant: str) -> tuple[str, int]:
        """Where the SMTP listener serving ``tenant`` is bound (useful with port 0)."""
        for owner, channel in self._channels:
            if owner == tenant and channel.listener is not None:
                return self._bound[(channel.listener.host, channel.listener.port)]
        raise KeyError(f"no SMTP listener for tenant {tenant!r}")

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        mailbox = self.mailbox(str(event.context.get("to", "")))
        if (
            mailbox is None
            or mailbox.tenant != event.tenant
            or mailbox.channel.name != event.source
        ):
            raise EventParseError(
                f"no email channel {event.source!r} of tenant {event.tenant!r} has this address",
                reason="no_channel",
            )
        if is_action(event):
            return action_message(event, address=mailbox.address, persona=mailbox.persona)
        # The edge's reading of the header block, stored with the mail: not read twice.
        head = MailHead.from_json(event.context.get("head"))
        parsed = await parsed_mail(mail_bytes(event), mailbox.channel.limits, head)
        for name in parsed.header_refusals:
            self._event(f"header_refused_{name}")
        for name in parsed.header_cleaned:
            self._event(f"header_cleaned_{name}")
        message = mail_message(event, parsed, address=mailbox.address, persona=mailbox.persona)
        for attachment in message.attachments:
            if attachment.refused is not None:
                self.context.metrics.media.labels("email", "in", attachment.refused).inc()
        self._held.hold(message.id, parsed.attachment_data)
        return message

    async def media_fetch(
        self, message: InboundMessage, attachment: Attachment
    ) -> MediaFetch | None:
        """The bytes of one attachment, as the parse decoded them from the stored mail."""
        part = attachment.extra.get("part")
        if not isinstance(part, int):
            return None
        data = self._held.take(message.id, part)
        if data is None:
            # Held no longer (past the bound) or never (no bytes): metadata only.
            log.warning("email.attachment_not_held", event_id=message.event_id)
            return None
        return MediaFetch(data=data)

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        mailbox = self._mailbox_for_reply(message)
        if mailbox is None or mailbox.channel.outbound.max_per_second is None:
            return None
        host, port = mailbox.channel.smarthost()
        rate = mailbox.channel.outbound.max_per_second
        return Pacing(key=f"email:smarthost:{host}:{port}", rate=rate, burst=max(1.0, rate))

    # -- inbound (connectors/email/edge.py) -------------------------------------------------------
    def mailbox(self, address: str) -> Mailbox | None:
        """The configured mailbox for ``address``; ``name+tag@`` falls back to ``name@``."""
        return self.edge.mailbox(address)

    def _event(self, event: str) -> None:
        self.edge.event(event)

    async def accept(
        self,
        raw: bytes,
        *,
        recipients: Sequence[str],
        mail_from: str | None,
        source: Literal["smtp", "imap"],
    ) -> InboundOutcome:
        """Screen and append one mail (:meth:`MailEdge.accept`)."""
        return await self.edge.accept(
            raw, recipients=recipients, mail_from=mail_from, source=source
        )

    async def _remember_thread(
        self, tenant: str, message_id: str, root: str, channel: EmailChannelConfig
    ) -> None:
        await self.edge.remember_thread(tenant, message_id, root, channel)

    async def quarantined(self, tenant: str, *, count: int = 100) -> list[dict[str, Any]]:
        """The tenant's quarantined messages, oldest first (operators and tests)."""
        return await self.edge.quarantined(tenant, count=count)

    async def suppressed(self, tenant: str, *, count: int = 100) -> list[dict[str, Any]]:
        """The tenant's suppressed (automatic or looping) messages, oldest first."""
        return await self.edge.suppressed(tenant, count=count)

    # -- outbound --------------------------------------------------------------------------------
    def _mailbox_for_reply(self, message: OutboundMessage) -> Mailbox | None:
        context = message.reply_context
        if not isinstance(context, EmailReplyContext):
            return None
        mailbox = self.mailbox(context.to_address)
        if mailbox is None or mailbox.tenant != message.conversation.tenant:
            return None
        return mailbox

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        context = message.reply_context
        if not isinstance(context, EmailReplyContext):
            raise PermanentDeliveryError(
                "an email reply needs the inbound message's email context",
                code=DeliveryFailure.BAD_REPLY_CONTEXT,
            )
        mailbox = self._mailbox_for_reply(message)
        if mailbox is None:
            raise PermanentDeliveryError(
                f"no email channel of tenant {message.conversation.tenant!r} owns the address",
                code=DeliveryFailure.NO_CHANNEL,
            )
        channel = mailbox.channel
        recipient = _usable_recipient(context)
        if recipient is None:
            # Only a context stored before the inbound checks existed can get here.
            self._event("reply_refused_bad_address")
            raise PermanentDeliveryError(
                "the customer's address is not one we may write; not sent",
                code=DeliveryFailure.BAD_ADDRESS,
            )
        if self.mailbox(recipient) is not None:
            raise PermanentDeliveryError(
                "refusing to mail our own address", code=DeliveryFailure.LOOP
            )
        await self._check_reply_rate(message, channel)
        outgoing = await gather_files(
            message,
            self._media(),
            limit=channel.max_outbound_attachment_bytes,
            metrics=self.context.metrics,
            content_id_tag=reply_message_id(message.idempotency_key, "x").split(".", 1)[0],
        )
        choice_link = await self._choice_links(message, context, mailbox, recipient)

        def build() -> tuple[Reply, bytes]:
            reply = render(
                message,
                context,
                from_address=mailbox.address,
                recipient=recipient,
                choice_link=choice_link,
                outgoing=outgoing,
            )
            return reply, reply.data if mailbox.signer is None else mailbox.signer.sign(reply.data)

        try:
            # Writing and signing cost ~0.1 s per MiB of files: off the event loop then.
            if sum(len(f.data) for f in outgoing.files) > _IN_THREAD_FILE_BYTES:
                reply, data = await asyncio.to_thread(build)
            else:
                reply, data = build()
        except AddressRefused as exc:
            self._event("reply_refused_bad_address")
            raise PermanentDeliveryError(
                f"cannot build the reply: {exc}", code=DeliveryFailure.BAD_ADDRESS
            ) from exc
        except HeaderBlockRefused as exc:
            self._event("reply_refused_header_block")
            log.error("email.reply_header_block_refused", problem=str(exc))
            raise PermanentDeliveryError(
                f"cannot build the reply: {exc}", code=DeliveryFailure.HEADER_BLOCK
            ) from exc
        # On record before the mail leaves: the customer's answer to it may arrive as soon as
        # it is delivered, and must find its thread; a store error here leaves nothing sent to
        # send twice. The id is the same on every retry, so a record without a sent mail is
        # harmless.
        await self._remember_thread(
            mailbox.tenant, reply.message_id, message.conversation.conversation_id, channel
        )
        answer = await self._deliver(channel, reply.sender, reply.recipient, data)
        self._event("reply_sent")
        return DeliveryReceipt(
            outbound_id=message.id,
            idempotency_key=message.idempotency_key,
            channel=Channel.EMAIL,
            status="sent",
            platform_message_id=reply.message_id,
            detail={"smtp": answer, "dkim": mailbox.signer is not None},
        )

    def _media(self) -> MediaService | None:
        try:
            return self.context.media
        except RuntimeError:  # a process without the media service sends files as text
            return None

    # -- choice links (connectors/email/actions.py) -----------------------------------------------
    async def _seal(self, tenant: str, channel: EmailChannelConfig) -> ActionSeal:
        key = (tenant, channel.name)
        seal = self._seals.get(key)
        if seal is None:
            if channel.actions.secrets:
                keys = [s.get_secret_value().encode() for s in channel.actions.secrets]
            else:
                media = self.context.config.media
                keys = await load_link_keys(
                    [s.get_secret_value() for s in media.link_secrets],
                    self.context.store,
                    self.context.keyspace,
                )
            seal = self._seals[key] = ActionSeal(derive_action_keys(keys))
        return seal

    async def _choice_links(
        self,
        message: OutboundMessage,
        context: EmailReplyContext,
        mailbox: Mailbox,
        recipient: str,
    ) -> ChoiceLink | None:
        """How each choice of ``message`` becomes a link, or None: no public URL, no links."""
        channel = mailbox.channel
        base = channel.actions.public_base_url or self.context.config.http.public_base_url
        if base is None or not message.choices():
            return None
        seal = await self._seal(mailbox.tenant, channel)
        domain = mailbox.address.rsplit("@", 1)[1]
        expires = int(time.time()) + channel.actions.ttl_seconds
        parent = reply_message_id(message.idempotency_key, domain)

        def link(value: str, label: str) -> str:
            ticket = ActionTicket(
                tenant=mailbox.tenant,
                root=message.conversation.conversation_id,
                value=value,
                label=label,
                expires=expires,
                address=mailbox.address,
                parent=parent,
                customer=recipient,
                name=context.from_name if recipient == context.from_address else None,
                subject=context.subject,
            )
            return f"{base.rstrip('/')}/email/actions/{seal.seal(ticket)}"

        return link

    async def _open_ticket(self, token: str) -> tuple[ActionTicket, str]:
        """The ticket in ``token`` and the channel block that answers it (ActionRefused)."""
        expired = False
        for tenant, channel in self._channels:
            try:
                ticket = (await self._seal(tenant, channel)).open(token)
            except ActionRefused as refused:
                expired = expired or refused.reason == "expired"
                continue
            mailbox = self.mailbox(ticket.address)
            if (
                ticket.tenant == tenant
                and mailbox is not None
                and mailbox.tenant == tenant
                and mailbox.channel.name == channel.name
            ):
                return ticket, channel.name
        raise ActionRefused("expired" if expired else "forged")

    def _count_action(self, outcome: str) -> None:
        self.context.metrics.email_actions.labels(outcome).inc()

    async def _check_reply_rate(
        self, message: OutboundMessage, channel: EmailChannelConfig
    ) -> None:
        """Stop two auto-responders ping-ponging: a token bucket per thread.

        Only a message's first attempt takes a token, so the core's retries of one reply are
        not counted as several replies, and an operator's replay of a capped reply goes out.
        """
        store = self.context.store
        first = await store.claim(
            self.context.keyspace.email_attempt(message.idempotency_key),
            ttl=self.context.config.store.dedupe_ttl_seconds,
        )
        if not first:
            return
        cap = channel.reply_rate
        bucket = await store.take_tokens(
            self.context.keyspace.email_reply_rate(message.conversation.key),
            rate=cap.max_replies / cap.per_seconds,
            burst=cap.max_replies,
        )
        if not bucket.allowed:
            self._event("reply_rate_capped")
            raise PermanentDeliveryError(
                f"reply rate cap reached for this thread ({cap.max_replies} per "
                f"{cap.per_seconds:g}s); not sent",
                code=DeliveryFailure.REPLY_RATE_CAPPED,
            )

    async def _deliver(
        self, channel: EmailChannelConfig, sender: str, recipient: str, data: bytes
    ) -> str:
        host, port = channel.smarthost()
        out = channel.outbound
        client = aiosmtplib.SMTP(
            hostname=host,
            port=port,
            use_tls=out.security == "tls",
            start_tls=out.security == "starttls",
            validate_certs=out.validate_certs,
            timeout=out.timeout_seconds,
            local_hostname=sender.rsplit("@", 1)[1],
        )
        # Before DATA nothing can have been delivered, so a broken connection is retried;
        # during DATA the server may have taken the message: never resent blindly (see
        # gateway.dispatcher), an operator decides.
        async with map_delivery_errors("smarthost", idempotent=True, read=[read_smtp]), client:
            if out.username is not None and out.password is not None:
                await client.login(out.username, out.password.get_secret_value())
            await client.mail(sender)
            await client.rcpt(recipient)
            async with map_delivery_errors("smarthost", idempotent=False, read=[read_smtp]):
                response = await client.data(data)
        return f"{response.code} {response.message}"


def render(
    message: OutboundMessage,
    context: EmailReplyContext,
    *,
    from_address: str,
    recipient: str,
    choice_link: ChoiceLink | None = None,
    outgoing: Outgoing | None = None,
) -> Reply:
    """The reply :meth:`EmailConnector.send` mails for ``message`` from ``from_address`` to
    ``recipient`` (before DKIM): what the console previews (without ``outgoing``, every
    attachment is written as its text form; without ``choice_link``, choices are numbered).

    Raises AddressRefused or HeaderBlockRefused as :func:`build_reply` does.
    """
    if outgoing is None:
        outgoing = Outgoing(
            lines=[FileLine(a.describe()) for a in message.attachments],
            described=list(message.attachments),
        )
    signature = message.persona.signature
    text = plain_text(
        message.text,
        attachments=tuple(outgoing.described),
        buttons=message.buttons,
        quick_replies=message.quick_replies,
        cards=message.cards,
        options=message.options,
        with_attachments=True,
    )
    html_body = render_html(
        message,
        signature=signature,
        choice_link=choice_link,
        card_images=outgoing.card_images,
        files=outgoing.lines,
    )
    return build_reply(
        from_address=from_address,
        from_name=message.persona.display_name,
        to_address=recipient,
        to_name=context.from_name if recipient == context.from_address else None,
        subject=context.subject,
        parent_message_id=context.message_id,
        parent_references=context.references,
        text=text,
        signature=signature,
        idempotency_key=message.idempotency_key,
        html_body=html_body,
        files=outgoing.files,
    )


def _usable_recipient(context: EmailReplyContext) -> str | None:
    """Reply-To if it is a usable address, else From (as the inbound side decides too)."""
    for candidate in (context.reply_to, context.from_address):
        if candidate:
            try:
                return checked_address(normalise_address(candidate))
            except AddressRefused:
                continue
    return None
