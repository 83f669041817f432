"""Files both ways: kept from inbound MIME byte for byte, refused with a reason, and sent
back as MIME parts (or signed links past the size budget), DKIM still verifying.

The echo persona at ``echo@`` sends back what the gateway kept, so a mail's round trip
shows what was kept, byte for byte, and how a reply carries files.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

import aiohttp
import pytest

from connectors.email.emulator import Smarthost, dkim_verify
from connectors.email.held import HeldFiles
from gateway.models import Channel, ConversationKey
from tests.connectors.email.conftest import EmailWorld
from tests.connectors.email.rich_world import (
    ECHO,
    JANE,
    PDF,
    PNG,
    rich_world,
    with_files,
)


@pytest.fixture
async def world(tmp_path: Path, smarthost: Smarthost, dkim_env: None) -> AsyncIterator[EmailWorld]:
    async with rich_world(tmp_path, smarthost) as w:
        yield w


def media(world: EmailWorld, direction: str, outcome: str) -> float:
    return world.metric(
        "flowbiz_media_total", channel="email", direction=direction, outcome=outcome
    )


async def kept_blobs(world: EmailWorld, root: str) -> dict[str | None, bytes]:
    service = world.gateway.runtime.media
    assert service is not None
    key = ConversationKey(tenant="acme", channel=Channel.EMAIL, conversation_id=root).key
    found = {}
    for info in await service.blobs.list_conversation("acme", key):
        _, data = await service.blobs.get(info.id)
        found[info.name] = data
    return found


async def test_a_photo_and_a_pdf_are_kept_and_echoed_back_byte_identical(
    world: EmailWorld, dkim_record: bytes
) -> None:
    mail = with_files(
        world.sender,
        to=ECHO,
        text="here are my files",
        files=[(PNG, "image/png", "photo.png"), (PDF, "application/pdf", "invoice.pdf")],
    )
    code, _ = await world.sender.send(mail)
    assert code == 250
    [reply] = await world.smarthost.wait_for(1)
    root = str(mail["Message-ID"]).strip("<>")
    assert await kept_blobs(world, root) == {"photo.png": PNG, "invoice.pdf": PDF}
    assert media(world, "in", "kept") == 2
    assert reply.message.get_content_type() == "multipart/mixed"
    assert reply.attachments() == [("photo.png", PNG), ("invoice.pdf", PDF)]
    assert "You said: here are my files" in reply.text()
    assert dkim_verify(reply.data, dns_record=dkim_record)
    assert media(world, "out", "sent") == 2


async def test_refused_files_leave_the_text_answered(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    """Over the tenant's media.max_bytes, an executable named .pdf, base64 garbage, a part
    over the channel's limit: each refused with its reason; the text is still answered."""
    exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 48
    exe += b"PE\x00\x00" + bytes(range(256))
    big = PNG + b"\x00" * 5000
    async with rich_world(
        tmp_path, smarthost, tenant_media={"max_bytes": 4000}, max_attachment_bytes=20_000
    ) as world:
        mail = with_files(
            world.sender,
            to=ECHO,
            text="files again",
            files=[
                (big, "image/png", "big.png"),
                (exe, "application/pdf", "invoice.pdf"),
                (PNG, "image/png", "fine.png"),
                (b"\x00" * 30_000, "application/octet-stream", "huge.bin"),
            ],
        )
        raw = mail.as_bytes()
        garbage = (
            b"--GARBAGE\r\nContent-Type: image/png\r\n"
            b'Content-Disposition: attachment; filename="broken.png"\r\n'
            b"Content-Transfer-Encoding: base64\r\n\r\n!!!%%%not*base64***\r\n"
        )
        raw = _add_raw_part(raw, garbage)
        code, _ = await world.sender.send(raw, mail_from=JANE, rcpt_to=[ECHO])
        assert code == 250
        [reply] = await world.smarthost.wait_for(1)
        assert "You said: files again" in reply.text()
        assert reply.attachments() == [("fine.png", PNG)]
        assert media(world, "in", "too_large") == 2  # the tenant's limit, the channel's
        assert media(world, "in", "type_not_allowed") == 1
        assert media(world, "in", "undecodable") == 1
        assert media(world, "in", "kept") == 1


def _add_raw_part(raw: bytes, part: bytes) -> bytes:
    """Splice a hand-written part before the closing boundary of a multipart/mixed mail."""
    boundary = re.search(rb'boundary="([^"]+)"', raw)
    assert boundary is not None
    closing = b"--" + boundary.group(1) + b"--"
    return raw.replace(closing, part.replace(b"GARBAGE", boundary.group(1)) + closing)


async def test_hostile_mime_never_crashes_and_the_text_is_answered(world: EmailWorld) -> None:
    """A forwarded mail nesting an archive, a part claiming a huge size, an empty part:
    each refused with its reason or kept at its real size; the mail is answered."""
    raw = (
        b"From: Jane <jane@customer.example>\r\nTo: echo@acme.example\r\n"
        b"Subject: nested\r\nMessage-ID: <nested.1@customer.example>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="o"\r\n\r\n'
        b"--o\r\nContent-Type: text/plain\r\n\r\nlook inside\r\n"
        b"--o\r\nContent-Type: message/rfc822\r\n\r\n"
        b"From: x@y.example\r\nSubject: inner\r\n"
        b'Content-Type: multipart/mixed; boundary="i"\r\n\r\n'
        b"--i\r\nContent-Type: application/zip\r\n"
        b'Content-Disposition: attachment; filename="a.zip"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n"
        + base64.encodebytes(b"PK\x03\x04" * 8)
        + b"--i--\r\n"
        b"--o\r\nContent-Type: image/png\r\nContent-Length: 99999999999\r\n"
        b'Content-Disposition: attachment; filename="claims.png"; size=99999999999\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\n" + base64.encodebytes(PNG) + b"--o\r\n"
        b'Content-Type: image/png\r\nContent-Disposition: attachment; filename="empty.png"\r\n'
        b"\r\n"
        b"--o--\r\n"
    )
    code, _ = await world.sender.send(raw, mail_from=JANE, rcpt_to=[ECHO])
    assert code == 250
    [reply] = await world.smarthost.wait_for(1)
    assert "You said: look inside" in reply.text()
    assert reply.attachments() == [("claims.png", PNG)]
    assert await kept_blobs(world, "nested.1@customer.example") == {"claims.png": PNG}
    assert media(world, "in", "nested_message") == 1
    assert media(world, "in", "empty") == 1
    assert media(world, "in", "kept") == 1


async def test_a_hostile_file_name_never_becomes_a_header(
    world: EmailWorld, dkim_record: bytes
) -> None:
    """A name that decodes to CR LF + "Bcc:" comes back as one cleaned parameter."""
    mail = with_files(
        world.sender, to=ECHO, text="name", files=[(PNG, "image/png", "placeholder.png")]
    )
    raw = mail.as_bytes().replace(
        b'filename="placeholder.png"', b"filename*=utf-8''a%0D%0ABcc%3A%20x%40evil.example"
    )
    await world.sender.send(raw, mail_from=JANE, rcpt_to=[ECHO])
    [reply] = await world.smarthost.wait_for(1)
    assert reply.rcpt_tos == (JANE,)
    parsed = message_from_bytes(reply.data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    for part in parsed.walk():
        assert "Bcc" not in part, "a header came out of a file name"
    assert b"\r\nBcc:" not in reply.data
    [(name, data)] = reply.attachments()
    assert name is not None
    assert "\r" not in name
    assert "\n" not in name
    assert "Bcc" in name  # kept as text of the one parameter
    assert data == PNG
    assert dkim_verify(reply.data, dns_record=dkim_record)


async def test_files_past_the_budget_go_as_signed_links(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    """Past max_outbound_attachment_bytes the file is a link to the gateway's copy, which
    the customer's browser fetches byte for byte."""
    async with rich_world(
        tmp_path, smarthost, max_outbound_attachment_bytes=len(PNG) + 10
    ) as world:
        mail = with_files(
            world.sender,
            to=ECHO,
            text="two",
            files=[(PNG, "image/png", "photo.png"), (PDF, "application/pdf", "big.pdf")],
        )
        await world.sender.send(mail)
        [reply] = await world.smarthost.wait_for(1)
        assert reply.attachments() == [("photo.png", PNG)]
        links = re.findall(r"https?://\S+/media/\S+", reply.text())
        assert len(links) == 1
        assert links[0] in reply.html().replace("&amp;", "&")
        async with aiohttp.ClientSession() as browser, browser.get(links[0]) as answer:
            assert answer.status == 200
            assert await answer.read() == PDF
        assert media(world, "out", "linked") == 1


async def test_many_mails_hold_no_bytes_afterwards(world: EmailWorld) -> None:
    """What the parse held for the keeper is handed out and let go."""
    for n in range(3):
        await world.sender.send(
            with_files(
                world.sender,
                to=ECHO,
                text=f"n{n}",
                subject=f"s{n}",
                files=[(PNG, "image/png", "p.png")],
            )
        )
    await world.smarthost.wait_for(3)
    await asyncio.sleep(0.1)
    assert len(world.connector._held) == 0


def test_held_bytes_are_bounded_by_size_and_age() -> None:
    """Bytes nobody asks for do not pile up: oldest dropped past the size bound, all past
    the age bound; each file is handed out once."""
    held = HeldFiles(max_bytes=1000, max_age=60)
    held.hold("a", [b"x" * 600, None])
    held.hold("b", [b"y" * 600])  # over the bound together: "a" goes
    assert held.take("a", 0) is None
    assert held.take("b", 0) == b"y" * 600
    assert held.take("b", 0) is None
    assert len(held) == 0
    aged = HeldFiles(max_age=0.0)
    aged.hold("old", [b"z"])
    aged.hold("new", [b"w"])  # holding expires what is older than max_age
    assert aged.take("old", 0) is None
