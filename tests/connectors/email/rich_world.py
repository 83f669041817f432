"""A running gateway for the rich-reply tests: a public URL known before it starts (the
choice links name it), the example personas plus an echo persona at ``echo@``."""

from __future__ import annotations

import re
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender, RelayedMail, Smarthost
from gateway.models import Channel
from tests.connectors.email.conftest import EmailWorld, email_block
from tests.harness import PERSONAS_DIR, base_config, running_gateway

ECHO = "echo@acme.example"
JANE = "jane@customer.example"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
# Big enough (300 KiB) that the reply carrying it is written and signed off the event loop.
PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n" + bytes(range(256)) * 1200 + b"\n%%EOF\n"
_HREF = re.compile(r'href="([^"]+/email/actions/[^"]+)"[^>]*>(?:\d+\. )?([^<]+)<')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def personas(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(PERSONAS_DIR / "core.yaml", folder / "core.yaml")
    (folder / "echo.yaml").write_text(
        "name: echo\ndisplay_name: Echo\nagent: {kind: echo, options: {prefix: 'You said: '}}\n"
    )
    return folder


@asynccontextmanager
async def rich_world(
    tmp_path: Path,
    smarthost: Smarthost,
    *,
    tenant_media: dict[str, Any] | None = None,
    **block: Any,
) -> AsyncIterator[EmailWorld]:
    port = free_port()
    overrides: dict[str, Any] = {
        "addresses": [{"address": "support@acme.example"}, {"address": ECHO, "persona": "echo"}],
        "actions": {"public_base_url": f"http://127.0.0.1:{port}"},
    }
    overrides.update(block)
    tenant: dict[str, Any] = {
        "id": "acme",
        "name": "Acme Corp",
        "channels": [email_block(smarthost, **overrides)],
    }
    if tenant_media is not None:
        tenant["media"] = tenant_media
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant])
    data["personas_dir"] = str(personas(tmp_path / "personas"))
    data["routing"] = {"default_persona": "core"}
    data["media"] = {"dir": str(tmp_path / "media")}
    async with running_gateway(data, port=port) as gw:
        connector = gw.runtime.connectors[Channel.EMAIL]
        assert isinstance(connector, EmailConnector)
        sender = MailSender(*connector.listener_address("acme"))
        yield EmailWorld(gateway=gw, connector=connector, sender=sender, smarthost=smarthost)


def choice_links(mail: RelayedMail) -> dict[str, str]:
    """label → action link, as a mail client shows the HTML part's buttons."""
    return {label.strip(): href for href, label in _HREF.findall(mail.html())}


def with_files(
    sender: MailSender,
    *,
    to: str,
    text: str,
    files: list[tuple[bytes, str, str]],
    subject: str = "Files",
) -> EmailMessage:
    """A mail from Jane with attachments ``(data, "type/subtype", filename)``."""
    return sender.compose(
        from_addr=JANE, from_name="Jane", to=to, subject=subject, text=text, files=files
    )
