"""The email channel's configuration: addresses, the SMTP listener, IMAP mailboxes, the
smarthost, DKIM and the reply rate, validated when the configuration is loaded.

Pure data: the connector (:mod:`connectors.email.connector`) and the IMAP poller
(:mod:`connectors.email.imap`) both read it; it imports neither.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from connectors.email.dkim_sign import DkimConfig
from connectors.email.parsing import Limits, normalise_address
from gateway.channel_config import given_in_schema
from gateway.config import ChannelConfig, Secret

__all__ = [
    "ActionLinksConfig",
    "DkimConfig",
    "EmailAddressConfig",
    "EmailChannelConfig",
    "ImapConfig",
    "OutboundSmtpConfig",
    "ReplyRateConfig",
    "SmtpListenerConfig",
]


class _Block(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EmailAddressConfig(_Block):
    """One address the gateway answers for, optionally tied to a persona."""

    address: str = Field(description="An address this tenant answers for.")
    persona: str | None = Field(
        default=None,
        description="Mail to this address is always answered by this persona; null: routing.",
    )

    @field_validator("address")
    @classmethod
    def _is_address(cls, value: str) -> str:
        address = normalise_address(value)
        local, at, domain = address.partition("@")
        if not local or not at or "." not in domain:
            raise ValueError(f"not an email address: {value!r}")
        return address


class SmtpListenerConfig(_Block):
    """The built-in SMTP server mail is delivered to (point an MX or a relay here)."""

    host: str = Field(default="127.0.0.1", description="The address to listen on.")
    port: int = Field(
        default=2525, ge=0, le=65535, description="The port to listen on; 0 picks a free one."
    )
    hostname: str = Field(
        default="flowbiz.localhost", description="Announced in the greeting; never looked up."
    )
    max_message_bytes: int = Field(
        default=25 * 1024 * 1024, gt=0, description="Larger messages get 552 at DATA."
    )
    tls_cert_file: Path | None = Field(default=None, description="Enables STARTTLS.")
    tls_key_file: Path | None = Field(default=None, description="The certificate's key.")
    require_starttls: bool = Field(
        default=False, description="Refuse mail from a client that did not start TLS."
    )
    timeout_seconds: float = Field(
        default=120, gt=0, description="An idle SMTP session is closed after this."
    )


class ImapConfig(_Block):
    """An existing mailbox the gateway reads mail from."""

    host: str = Field(description="The IMAP server.")
    port: int | None = Field(default=None, description="Default: 993 with tls, else 143.")
    security: Literal["tls", "none"] = Field(default="tls", description="`tls` or `none`.")
    username: str = Field(description="The mailbox's login.")
    password: Secret = Field(description="The mailbox's password.")
    mailbox: str = Field(default="INBOX", description="The folder read.")
    address: str | None = Field(
        default=None,
        description="Which of the addresses this mailbox receives; default: the first.",
    )
    idle: bool = Field(
        default=True, description="Use IDLE when the server offers it; poll otherwise."
    )
    poll_seconds: float = Field(default=60, gt=0, description="Between polls without IDLE.")
    idle_seconds: float = Field(
        default=25 * 60,
        gt=0,
        le=29 * 60,
        description="IDLE is re-issued after this, before the servers' 29-minute limit.",
    )
    move_to: str | None = Field(
        default=None,
        description="Move ingested mail to this folder; null: flag it (processed_flag).",
    )
    processed_flag: str = Field(
        default="$FlowbizIngested", description="The flag on ingested mail."
    )
    max_message_bytes: int = Field(
        default=25 * 1024 * 1024,
        gt=0,
        description="Larger messages are quarantined without being fetched.",
    )
    batch: int = Field(default=50, ge=1, le=1000, description="Messages fetched per round.")
    reconnect_seconds: float = Field(
        default=5, gt=0, description="The wait before reconnecting after a failure."
    )
    timeout_seconds: float = Field(default=30, gt=0, description="Per IMAP command.")


class OutboundSmtpConfig(_Block):
    """The smarthost replies are sent through (``api_base_url: smtp://…`` overrides it)."""

    host: str = Field(default="127.0.0.1", description="The smarthost.")
    port: int | None = Field(
        default=None, description="Default: 465 with tls, 587 with starttls, else 25."
    )
    security: Literal["starttls", "tls", "none"] = Field(
        default="starttls", description="`starttls`, `tls` or `none`."
    )
    username: str | None = Field(default=None, description="The login, if the host wants one.")
    password: Secret | None = Field(default=None, description="Required with username.")
    validate_certs: bool = Field(default=True, description="Check the host's TLS certificate.")
    timeout_seconds: float = Field(default=30, gt=0, description="Per SMTP conversation.")
    max_per_second: float | None = Field(
        default=None, gt=0, description="The smarthost's sending limit, paced locally."
    )


class ReplyRateConfig(_Block):
    """At most ``max_replies`` per thread within ``per_seconds`` (a token bucket)."""

    max_replies: int = Field(
        default=5,
        ge=1,
        description="Replies per thread within per_seconds; more are refused "
        "(`reply_rate_capped`), so two auto-responders cannot ping-pong.",
    )
    per_seconds: float = Field(default=3600, gt=0, description="The window of max_replies.")


class ActionLinksConfig(_Block):
    """Choices in a reply's HTML part as signed links (``/email/actions/{token}``)."""

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(?:/[^\s?#]*)?$",
        description="The gateway's public URL customers' browsers reach (e.g. "
        "`https://gw.acme.example`); falls back to `http.public_base_url`. Without either, "
        "choices are numbered text only (answering the number still works).",
    )
    secrets: tuple[Secret, ...] = Field(
        default=(),
        description="Keys sealing the links, newest first (a rotation keeps the old one "
        "second). Empty: derived from the media link key (`media.link_secrets`, or the "
        "key kept in the store).",
    )
    ttl_seconds: int = Field(
        default=14 * 86400,
        ge=60,
        le=90 * 86400,
        description="How long a choice link works after the reply was sent.",
    )


class EmailChannelConfig(ChannelConfig):
    """A tenant's mail: SMTP in (listener) or IMAP, replies through a smarthost."""

    # What ``_consistent`` requires, told to the JSON Schema too: mail must come in.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [given_in_schema("listener", "object"), given_in_schema("imap", "object")]
        }
    )

    kind: Literal["email"] = "email"
    addresses: tuple[EmailAddressConfig, ...] = Field(
        min_length=1, description="The addresses this tenant answers for."
    )
    listener: SmtpListenerConfig | None = Field(
        default=None, description="The built-in SMTP server; this or imap is required."
    )
    imap: ImapConfig | None = Field(default=None, description="An existing mailbox to read.")
    outbound: OutboundSmtpConfig = Field(
        default=OutboundSmtpConfig(), description="Where replies go."
    )
    dkim: DkimConfig | None = Field(default=None, description="Sign replies with DKIM.")
    reply_rate: ReplyRateConfig = Field(
        default=ReplyRateConfig(),
        description="At most 5 replies per thread per hour unless changed.",
    )
    max_text_chars: int = Field(
        default=20_000,
        gt=0,
        description="The message text (quotes removed) is cut to this many characters.",
    )
    max_attachments: int = Field(
        default=50,
        ge=0,
        description="A message with more attachments is refused (too_many_attachments).",
    )
    max_attachment_bytes: int = Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="A bigger attachment is not kept (refused `too_large`, flagged "
        "over_limit); the tenant's `media.max_bytes` applies as well.",
    )
    reply_languages: tuple[str, ...] = Field(
        default=("en",), description="Languages for quoted-reply detection."
    )
    max_outbound_attachment_bytes: int = Field(
        default=20 * 1024 * 1024,
        ge=0,
        description="The bytes of the files a reply carries in total (inline card images "
        "included; base64 adds a third on the wire); the files beyond it are sent as signed "
        "links to the gateway's copy instead.",
    )
    actions: ActionLinksConfig = Field(
        default=ActionLinksConfig(),
        description="Choices (buttons, options, quick replies) as signed links in the HTML part.",
    )
    thread_ttl_seconds: float = Field(
        default=180 * 86400,
        gt=0,
        description="How long a Message-ID → thread mapping is remembered.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> EmailChannelConfig:
        if self.listener is None and self.imap is None:
            raise ValueError("give a listener (SMTP) or an imap mailbox: mail must come in")
        if self.imap is not None and self.imap.address is not None:
            wanted = normalise_address(self.imap.address)
            if wanted not in {a.address for a in self.addresses}:
                raise ValueError(f"imap.address {wanted!r} is not one of the addresses")
        if self.outbound.username is not None and self.outbound.password is None:
            raise ValueError("outbound.username needs outbound.password")
        return self

    @property
    def limits(self) -> Limits:
        return Limits(
            max_text_chars=self.max_text_chars,
            max_attachments=self.max_attachments,
            max_attachment_bytes=self.max_attachment_bytes,
            reply_languages=self.reply_languages,
        )

    def smarthost(self) -> tuple[str, int]:
        """Where replies go: ``api_base_url`` (``smtp://host:port``) overrides ``outbound``."""
        if self.api_base_url:
            parts = urlsplit(self.api_base_url)
            if parts.hostname:
                return parts.hostname, parts.port or 25
        default = {"tls": 465, "starttls": 587, "none": 25}[self.outbound.security]
        return self.outbound.host, self.outbound.port or default
