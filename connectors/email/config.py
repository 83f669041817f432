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
from gateway.config import ChannelConfig, Secret

__all__ = [
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

    address: str
    persona: str | None = None

    @field_validator("address")
    @classmethod
    def _is_address(cls, value: str) -> str:
        address = normalise_address(value)
        local, at, domain = address.partition("@")
        if not local or not at or "." not in domain:
            raise ValueError(f"not an email address: {value!r}")
        return address


class SmtpListenerConfig(_Block):
    host: str = "127.0.0.1"
    port: int = Field(default=2525, ge=0, le=65535)  # 0 picks a free port (tests)
    hostname: str = "flowbiz.localhost"  # announced in the greeting; never looked up
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    tls_cert_file: Path | None = None  # enables STARTTLS
    tls_key_file: Path | None = None
    require_starttls: bool = False
    timeout_seconds: float = Field(default=120, gt=0)


class ImapConfig(_Block):
    host: str
    port: int | None = None  # 993 with tls, else 143
    security: Literal["tls", "none"] = "tls"
    username: str
    password: Secret
    mailbox: str = "INBOX"
    address: str | None = None  # which configured address this mailbox receives; first if unset
    idle: bool = True  # use IDLE when the server offers it; poll otherwise
    poll_seconds: float = Field(default=60, gt=0)
    idle_seconds: float = Field(default=25 * 60, gt=0, le=29 * 60)
    move_to: str | None = None  # move ingested mail here; else flag it
    processed_flag: str = "$FlowbizIngested"
    max_message_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    batch: int = Field(default=50, ge=1, le=1000)
    reconnect_seconds: float = Field(default=5, gt=0)
    timeout_seconds: float = Field(default=30, gt=0)


class OutboundSmtpConfig(_Block):
    host: str = "127.0.0.1"
    port: int | None = None  # 465 with tls, 587 with starttls, else 25
    security: Literal["starttls", "tls", "none"] = "starttls"
    username: str | None = None
    password: Secret | None = None
    validate_certs: bool = True
    timeout_seconds: float = Field(default=30, gt=0)
    max_per_second: float | None = Field(default=None, gt=0)  # the smarthost's sending limit


class ReplyRateConfig(_Block):
    """At most ``max_replies`` per thread within ``per_seconds`` (a token bucket)."""

    max_replies: int = Field(default=5, ge=1)
    per_seconds: float = Field(default=3600, gt=0)


class EmailChannelConfig(ChannelConfig):
    kind: Literal["email"] = "email"
    addresses: tuple[EmailAddressConfig, ...] = Field(min_length=1)
    listener: SmtpListenerConfig | None = None
    imap: ImapConfig | None = None
    outbound: OutboundSmtpConfig = OutboundSmtpConfig()
    dkim: DkimConfig | None = None
    reply_rate: ReplyRateConfig = ReplyRateConfig()
    max_text_chars: int = Field(default=20_000, gt=0)
    max_attachments: int = Field(default=50, ge=0)
    max_attachment_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    reply_languages: tuple[str, ...] = ("en",)
    thread_ttl_seconds: float = Field(default=180 * 86400, gt=0)

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
