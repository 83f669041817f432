"""The acknowledged path of an inbound WhatsApp message, ``POST /whatsapp/webhook``.

What happens before Twilio gets its empty TwiML, and nothing more:

1. the form is decoded (:func:`~connectors.whatsapp.signature.parse_form`; 415 for another
   media type, 400 for a body that is not UTF-8 form data);
2. ``To`` (else ``MessagingServiceSid``) picks the tenant's channel, a present
   ``AccountSid`` must be its account (404 otherwise);
3. ``X-Twilio-Signature`` is checked: Twilio's HMAC-SHA1 over the public URL and the sorted
   parameters, once (403 otherwise);
4. what admission needs is read from plain fields: ``MessageSid``, the id to dedupe on, and
   ``From``, the customer whose conversation it is (400 when either is malformed, or ``To``
   is not a WhatsApp address);
5. the form, as a JSON object of each field's first value, is appended in a
   :func:`~gateway.envelope.encode_raw_event` envelope (one group-committed store call).

The message itself — text, button payload, media, location, profile name, the
``WhatsAppReplyContext`` — is read in the worker (:mod:`connectors.whatsapp.parse`). The
24-hour window is the time the edge received the message, fixed in the envelope; the worker
records it with the turn.
"""

from __future__ import annotations

import re

from twilio.twiml.messaging_response import MessagingResponse

from connectors.base import InboundRequest, InboundResponse, InboundResult
from connectors.whatsapp.channels import ChannelTable, WhatsAppChannel
from connectors.whatsapp.config import ADDRESS
from connectors.whatsapp.signature import Form, parse_form, signed_url, verify_signature
from gateway.envelope import encode_raw_event
from gateway.errors import PayloadError
from gateway.models import Channel, conversation_key_of

__all__ = ["ACK", "EMPTY_TWIML", "WebhookEdge"]

EMPTY_TWIML = str(MessagingResponse().to_xml()).encode()
ACK = InboundResponse(body=EMPTY_TWIML, content_type="text/xml")
_MESSAGE_SID = re.compile(r"[SM]M[0-9a-fA-F]{32}")
_WHATSAPP = Channel.WHATSAPP.value


class WebhookEdge:
    """Verify an inbound message webhook and append it as Twilio sent it."""

    def __init__(self, table: ChannelTable) -> None:
        self._table = table

    def verify(self, request: InboundRequest, form: Form, channel: WhatsAppChannel) -> None:
        """X-Twilio-Signature against the URL Twilio called; VerificationError (403) if not."""
        url = signed_url(
            request,
            public_base_url=channel.public_base_url,
            trusted_proxies=channel.config.trusted_proxies,
        )
        verify_signature(request, form, token=channel.token, url=url, channel=channel.name)

    async def receive(self, request: InboundRequest) -> InboundResult:
        form = parse_form(request)
        fields = form.fields
        channel = self._table.for_request(fields, ours="To")
        self.verify(request, form, channel)
        sid = fields.get("MessageSid") or fields.get("SmsMessageSid") or ""
        customer = fields.get("From", "")
        if _MESSAGE_SID.fullmatch(sid) is None:
            raise PayloadError("MessageSid is missing or malformed")
        if ADDRESS.fullmatch(customer) is None or ADDRESS.fullmatch(fields.get("To", "")) is None:
            raise PayloadError("From and To must be whatsapp:+<number> addresses")
        tenant = channel.tenant
        event = encode_raw_event(
            event_id=sid,
            tenant=tenant,
            channel=Channel.WHATSAPP,
            source=channel.name,
            conversation_key=conversation_key_of(tenant, _WHATSAPP, customer, None),
            event=fields,
        )
        return InboundResult(encoded=[event], response=ACK)
