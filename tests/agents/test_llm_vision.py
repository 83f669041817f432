"""The LLM agent and the files of a message: with ``vision`` the kept images reach the model
(the emulator decodes them and says what it saw), without it, and past the size limit, they
are words; the platform's URL never reaches the model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from agents.emulators.openai import OpenAIEmulator
from agents.persona import Persona
from agents.registry import build_agent
from gateway.media import FileBlobStore, MediaLinks, MediaService
from gateway.metrics import Metrics
from gateway.models import Attachment, Channel, ConversationKey, InboundMessage, Participant
from tests.agents.conftest import make_context
from tests.agents.test_llm import llm_persona
from tests.agents.test_webhook_rich import PhotoChannel, photo
from tests.harness import base_config, http_tenant, running_gateway
from tests.media.conftest import PDF, PNG

CUSTOMER = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1")


@pytest.fixture
async def media(tmp_path: Path) -> AsyncIterator[MediaService]:
    async with aiohttp.ClientSession() as http:
        yield MediaService(
            config=lambda: None,  # type: ignore[arg-type,return-value] - reads and links only
            blobs=FileBlobStore(tmp_path / "media"),
            links=MediaLinks([b"k"], base_url="https://gw.example", ttl_seconds=60),
            http=http,
            metrics=Metrics(),
        )


async def kept(media: MediaService, data: bytes, content_type: str, name: str) -> Attachment:
    info = await media.blobs.put(
        tenant="acme",
        conversation_key=CUSTOMER.key,
        data=data,
        content_type=content_type,
        name=name,
    )
    kind = "image" if content_type.startswith("image/") else "file"
    return Attachment(
        kind=kind,
        name=name,
        mime_type=content_type,
        size=info.size,
        blob=info.id,
        sha256=info.sha256,
        url="https://files.platform.example/secret/" + name,
    )


async def ask(
    emulator: OpenAIEmulator,
    media: MediaService,
    attachments: tuple[Attachment, ...],
    **options: Any,
) -> str:
    persona: Persona = llm_persona(emulator.base_url, tools=(), **options)
    context = make_context(persona, "what is this?")
    message = context.message.model_copy(update={"attachments": attachments})
    context = dataclasses.replace(context, message=message, media=media)
    reply = await build_agent(persona).respond(context)
    return reply.parts[0].text


async def test_with_vision_the_model_sees_the_kept_image(emulator, media):
    picture = await kept(media, PNG, "image/png", "cat.png")
    answer = await ask(emulator, media, (picture,), vision=True)
    digest = hashlib.sha256(PNG).hexdigest()[:12]
    assert answer == (
        f"(emulated) what is this? — I see: image/png, {len(PNG)} bytes, sha256 {digest}"
    )
    assert emulator.images == [("image/png", PNG)]
    text, image = emulator.content_parts[0]
    assert text == {"type": "text", "text": "what is this?"}
    assert image["image_url"]["url"].startswith("data:image/png;base64,")
    assert "platform.example" not in json.dumps(emulator.requests[0])


async def test_without_vision_an_image_is_words(emulator, media):
    picture = await kept(media, PNG, "image/png", "cat.png")
    answer = await ask(emulator, media, (picture,))
    assert answer == "(emulated) what is this?\n[image: cat.png]"
    assert emulator.images == []
    assert emulator.requests[0]["messages"][-1]["content"] == "what is this?\n[image: cat.png]"


async def test_images_past_the_limit_and_other_files_are_words_even_with_vision(emulator, media):
    big = await kept(media, PNG, "image/png", "big.png")
    document = await kept(media, PDF, "application/pdf", "terms.pdf")
    refused = Attachment(kind="image", name="huge.png", refused="too_large")
    small = await kept(media, PNG, "image/png", "small.png")
    limit = len(PNG) - 1  # "small" is a different blob of the same size: both too big
    answer = await ask(
        emulator, media, (big, document, refused, small), vision=True, vision_max_bytes=limit
    )
    assert answer == (
        "(emulated) what is this?\n[image: big.png]\n[file: terms.pdf]\n"
        "[image: huge.png (not kept: too_large)]\n[image: small.png]"
    )
    assert emulator.images == []


async def test_a_photo_through_the_gateway_reaches_a_vision_model(tmp_path, emulator):
    """Kept by the worker from the channel, read back from the blob store, seen by the model."""
    folder = tmp_path / "personas"
    folder.mkdir()
    persona = llm_persona(emulator.base_url, tools=(), vision=True)
    (folder / "helper.yaml").write_text(json.dumps(persona.model_dump(mode="json")))
    data = base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[http_tenant(None)],
        media={"dir": str(tmp_path / "media")},
    )
    data["personas_dir"] = str(folder)
    data["routing"] = {"default_persona": "helper"}
    async with running_gateway(data) as gw:
        channel = PhotoChannel()
        gw.runtime.connectors[Channel.HTTP] = channel
        assert gw.runtime.ingestor is not None
        message: InboundMessage = photo("ev-1")
        message = message.model_copy(update={"sender": Participant(id="u1")})
        await gw.runtime.ingestor.submit([message])
        [sent] = await channel.wait_for(1, timeout=10)
    assert sent.text.startswith("(emulated) here it is — I see: image/png")
    assert emulator.images == [("image/png", PNG)]
