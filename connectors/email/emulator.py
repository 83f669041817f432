"""A real local mail world for the email channel: a smarthost and a sender.

``Smarthost`` is what the gateway relays its replies through: a real aiosmtpd server on
loopback that records every message (envelope and bytes) and can answer ``421``/``451``/
``550``… on demand, at RCPT or at DATA, to exercise retries and dead-lettering.

``MailSender`` is the other side of the conversation: an aiosmtplib client that writes mail
the way common clients do (multipart/alternative, attachments, quoted replies, References
chains) and delivers it into the gateway's SMTP listener, returning the listener's SMTP
answer. ``RelayedMail`` reads a relayed reply as a mail client shows it: its text, its HTML
and its attached files.

``dkim_dns_record`` turns a private key into the TXT record a domain would publish, so a
test or the demo can verify signatures with dkimpy without DNS; ``generate_dkim_key``
makes a key with the ``openssl`` command.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal

import aiosmtplib
import dkim
from aiosmtpd.smtp import SMTP as SMTPServerProtocol
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from connectors.email.dkim_sign import load_signing_key
from gateway.models import utcnow

__all__ = [
    "MailSender",
    "RelayedMail",
    "Smarthost",
    "dkim_dns_record",
    "dkim_verify",
    "generate_dkim_key",
    "generate_tls_certificate",
]

Stage = Literal["rcpt", "data"]


@dataclass(frozen=True, slots=True)
class RelayedMail:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    received_at: float = field(default_factory=time.monotonic, compare=False)

    @property
    def message(self) -> EmailMessage:
        parsed = message_from_bytes(self.data, policy=policy.default)
        assert isinstance(parsed, EmailMessage)  # policy.default builds EmailMessage
        return parsed

    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        content = "" if body is None else str(body.get_content())
        return content.replace("\r\n", "\n")

    def html(self) -> str:
        """The HTML alternative, as a mail client renders it ("" without one)."""
        body = self.message.get_body(preferencelist=("html",))
        return "" if body is None else str(body.get_content())

    def attachments(self) -> list[tuple[str | None, bytes]]:
        """``(file name, decoded bytes)`` of each attached file, in order."""
        found = []
        for part in self.message.iter_attachments():
            payload = part.get_payload(decode=True)
            found.append((part.get_filename(), payload if isinstance(payload, bytes) else b""))
        return found


@dataclass(slots=True)
class Smarthost:
    """A recording SMTP relay on loopback that can fail on demand."""

    host: str = "127.0.0.1"
    port: int = 0
    tls_context: ssl.SSLContext | None = None  # offer STARTTLS (and require it)
    credentials: tuple[str, str] | None = None  # require AUTH with this user and password
    received: list[RelayedMail] = field(default_factory=list)
    attempts: int = 0  # DATA commands seen, failed ones included
    logins: list[str] = field(default_factory=list)  # users that authenticated
    tls_sessions: int = 0  # DATA commands that arrived over TLS
    _failures: deque[tuple[Stage, str]] = field(default_factory=deque)
    _server: asyncio.Server | None = None
    _arrived: asyncio.Condition | None = None

    def fail_next(
        self, count: int, *, reply: str = "451 4.3.0 Try again later", stage: Stage = "data"
    ) -> None:
        """Answer the next ``count`` transactions with ``reply`` at ``stage``."""
        self._failures.extend([(stage, reply)] * count)

    async def start(self) -> Smarthost:
        loop = asyncio.get_running_loop()
        self._arrived = asyncio.Condition()
        self._server = await loop.create_server(
            lambda: SMTPServerProtocol(
                self,
                hostname="smarthost.localhost",
                enable_SMTPUTF8=True,
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None,
                auth_required=self.credentials is not None,
                authenticator=self._authenticate if self.credentials is not None else None,
                loop=loop,
            ),
            self.host,
            self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def wait_for(self, count: int, *, timeout: float = 10.0) -> list[RelayedMail]:
        assert self._arrived is not None
        async with asyncio.timeout(timeout), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)
        return list(self.received)

    def _authenticate(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if isinstance(data, LoginPassword) and self.credentials is not None:
            user, password = data.login.decode(), data.password.decode()
            if (user, password) == self.credentials:
                self.logins.append(user)
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def _failure(self, stage: Stage) -> str | None:
        if self._failures and self._failures[0][0] == stage:
            return self._failures.popleft()[1]
        return None

    async def handle_RCPT(
        self, server: Any, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        failure = self._failure("rcpt")
        if failure is not None:
            return failure
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if session.ssl is not None:
            self.tls_sessions += 1
        failure = self._failure("data")
        if failure is not None:
            return failure
        assert self._arrived is not None
        content = envelope.original_content or envelope.content
        data = content if isinstance(content, bytes) else str(content).encode()
        async with self._arrived:
            self.received.append(
                RelayedMail(str(envelope.mail_from), tuple(envelope.rcpt_tos), data)
            )
            self._arrived.notify_all()
        return f"250 2.0.0 Ok: queued as {len(self.received)}"


@dataclass(slots=True)
class MailSender:
    """Writes mail like a person's mail client and delivers it to an SMTP listener."""

    host: str
    port: int
    domain: str = "customer.example"
    tls: bool = False  # STARTTLS (certificates not checked: the emulator's are self-signed)

    def compose(
        self,
        *,
        from_addr: str,
        from_name: str,
        to: str,
        subject: str,
        text: str,
        html: str | None = None,
        message_id: str | None = None,
        in_reply_to: str | None = None,
        references: Sequence[str] = (),
        headers: dict[str, str] | None = None,
        files: Sequence[tuple[bytes, str, str]] = (),
    ) -> EmailMessage:
        """A mail; ``files``: attachments as ``(bytes, "type/subtype", file name)``."""
        msg = EmailMessage(policy=policy.SMTP)
        local, _, domain = from_addr.partition("@")
        msg["From"] = Address(display_name=from_name, username=local, domain=domain)
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = format_datetime(utcnow())
        msg["Message-ID"] = message_id or make_msgid(domain=self.domain)
        if in_reply_to is not None:
            msg["In-Reply-To"] = in_reply_to
        if references:
            msg["References"] = " ".join(references)
        msg["MIME-Version"] = "1.0"
        msg["User-Agent"] = "Mozilla/5.0 Thunderbird/115.8.0"
        for name, value in (headers or {}).items():
            msg[name] = value
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
        for data, content_type, name in files:
            maintype, _, subtype = content_type.partition("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
        return msg

    def reply_to(
        self, original: EmailMessage, *, from_addr: str, from_name: str, text: str
    ) -> EmailMessage:
        """A reply to ``original`` as a mail client writes it: quoted, threaded."""
        subject = str(original["Subject"] or "")
        if not subject.lower().startswith("re:"):
            subject = f"Re: {subject}"
        refs = str(original.get("References", "")).split()
        parent = str(original["Message-ID"])
        body = original.get_body(preferencelist=("plain",))
        quoted = "" if body is None else str(body.get_content())
        sender = str(original["From"])
        quote = "\n".join(f"> {line}" for line in quoted.splitlines())
        return self.compose(
            from_addr=from_addr,
            from_name=from_name,
            to=sender,
            subject=subject,
            text=f"{text}\n\nOn {original['Date']}, {sender} wrote:\n{quote}\n",
            in_reply_to=parent,
            references=[*refs, parent],
        )

    async def send(
        self,
        message: EmailMessage | bytes,
        *,
        mail_from: str | None = None,
        rcpt_to: Sequence[str] | None = None,
    ) -> tuple[int, str]:
        """Deliver; return the listener's final ``(code, text)`` instead of raising on 4xx/5xx."""
        if isinstance(message, EmailMessage):
            sender = (
                mail_from if mail_from is not None else str(message["From"].addresses[0].addr_spec)
            )
            recipients = list(rcpt_to or [str(a.addr_spec) for a in message["To"].addresses])
            data = message.as_bytes()
        else:
            sender = mail_from or ""
            recipients = list(rcpt_to or [])
            data = message
        client = aiosmtplib.SMTP(
            hostname=self.host,
            port=self.port,
            start_tls=self.tls,
            validate_certs=False,
            timeout=10,
            local_hostname="mx.customer.example",
        )
        try:
            async with client:
                await client.mail(sender)
                for recipient in recipients:
                    await client.rcpt(recipient)
                response = await client.data(data)
        except aiosmtplib.SMTPRecipientRefused as exc:
            return exc.code, exc.message
        except aiosmtplib.SMTPResponseException as exc:
            return exc.code, exc.message
        return response.code, response.message


# -- DKIM ---------------------------------------------------------------------------------------
def dkim_dns_record(private_key_pem: bytes) -> bytes:
    """The ``v=DKIM1; k=…; p=…`` TXT record for the key: an RSA SubjectPublicKeyInfo or the
    raw Ed25519 public key (RFC 8463 §4.2), base64."""
    key = load_signing_key(private_key_pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b"v=DKIM1; k=ed25519; p=" + base64.b64encode(raw)
    spki = key.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(spki)


def dkim_verify(message: bytes, *, dns_record: bytes) -> bool:
    """Verify the first DKIM signature, answering the key lookup with ``dns_record``."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return dns_record

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


def generate_tls_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed ``localhost`` certificate and key (PEM files), made by ``openssl``."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    command = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    command += ["-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)]
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603 - fixed argv, no shell
    return cert, key


def generate_dkim_key(bits: int = 2048) -> bytes:
    """A fresh RSA private key (PEM), made by ``openssl genrsa``."""
    result = subprocess.run(  # noqa: S603 - fixed arguments, no shell
        ["openssl", "genrsa", str(bits)],  # noqa: S607 - openssl is found on PATH by design
        check=True,
        capture_output=True,
    )
    return result.stdout
