"""The worker with rich messages: files kept before the agent, cards from the rules, numbered
choices answered by number, typing indicators that never hold up a reply."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from connectors.collecting import CollectingConnector
from gateway.media import FileBlobStore, MediaFetch, MediaLinks, MediaService
from gateway.models import Attachment, EventKind, InboundMessage
from tests.media.conftest import ELF, PNG
from tests.pipeline.conftest import CUSTOMER, Pipeline, said

PRICING = "Our plans: Free, Pro (29/month) and Enterprise (talk to us)."


async def _turn(pipeline: Pipeline, message: InboundMessage, **worker: object) -> None:
    partition, entry = await pipeline.inbound(message)
    built = pipeline.worker()
    for name, value in worker.items():
        setattr(built, name, value)
    await built.handle(partition, entry)


async def test_a_number_answers_the_choice_it_names(pipeline: Pipeline) -> None:
    await _turn(pipeline, said("hello", event_id="ev-1"))
    [greeting] = await pipeline.outbox(CUSTOMER)
    assert greeting.plain_text().endswith("1. Opening hours\n2. Pricing")
    await _turn(pipeline, said(" 2. ", event_id="ev-2"))
    assert (await pipeline.outbox(CUSTOMER))[-1].text == PRICING
    # The pricing answer offered no choices: "1" is just text now.
    await _turn(pipeline, said("1", event_id="ev-3"))
    assert (await pipeline.outbox(CUSTOMER))[-1].text.startswith("I am not sure")


@pytest.mark.parametrize("text", ["3", "0", "2 please", "12"])
async def test_a_number_out_of_range_or_with_words_stays_text(
    pipeline: Pipeline, text: str
) -> None:
    await _turn(pipeline, said("hello", event_id="ev-1"))
    await _turn(pipeline, said(text, event_id="ev-2"))
    assert (await pipeline.outbox(CUSTOMER))[-1].text.startswith("I am not sure")


class PictureSource(CollectingConnector):
    """The collecting connector, with files at hand and a typing indicator of a given mood."""

    def __init__(self, data: bytes = PNG, typing: str = "ok") -> None:
        super().__init__()
        self.data, self.typing_mood = data, typing
        self.typing_shown: list[str] = []
        self.fetches = 0

    async def media_fetch(self, message: InboundMessage, attachment: Attachment) -> MediaFetch:
        self.fetches += 1
        return MediaFetch(data=self.data)

    async def show_typing(self, message: InboundMessage) -> None:
        self.typing_shown.append(message.id)
        if self.typing_mood == "hang":
            await asyncio.Event().wait()
        if self.typing_mood == "fail":
            raise ConnectionResetError("the platform hung up")


@pytest.fixture
async def media(tmp_path: Path, pipeline: Pipeline) -> AsyncIterator[MediaService]:
    async with aiohttp.ClientSession() as http:
        yield MediaService(
            config=lambda: pipeline.config,
            blobs=FileBlobStore(tmp_path / "media"),
            links=MediaLinks([b"k"], base_url="https://gw.example", ttl_seconds=60),
            http=http,
            metrics=pipeline.metrics,
        )


def _photo(event_id: str) -> InboundMessage:
    return said("", event_id=event_id).model_copy(
        update={"attachments": (Attachment(kind="image", name="me.jpg"),)}
    )


async def test_a_photo_is_kept_before_the_agent_and_answered_with_a_card(
    pipeline: Pipeline, media: MediaService
) -> None:
    pipeline.connector = PictureSource()
    await _turn(pipeline, _photo("ev-1"), media=media)
    [kept] = await media.blobs.list_conversation("acme", CUSTOMER.key)
    assert kept.content_type == "image/png"
    [answer] = await pipeline.outbox(CUSTOMER)
    assert answer.text == "Thanks for the photo, Ann!"
    [card] = answer.cards
    assert card.title == "Photo received"
    assert [b.value for b in card.buttons] == ["opening hours", "pricing"]
    # The card's buttons are numbered in the text form, and a number answers them.
    await _turn(pipeline, said("2", event_id="ev-2"), media=media)
    assert (await pipeline.outbox(CUSTOMER))[-1].text == PRICING


async def test_a_refused_file_leaves_the_message_answered(
    pipeline: Pipeline, media: MediaService
) -> None:
    pipeline.connector = PictureSource(data=ELF)
    await _turn(pipeline, _photo("ev-1"), media=media)
    assert await media.blobs.list_conversation("acme", CUSTOMER.key) == []
    # still an image message for the rules: the sender said it was one
    [answer] = await pipeline.outbox(CUSTOMER)
    assert answer.cards
    assert (
        pipeline.count(
            "flowbiz_media_total", channel="http", direction="in", outcome="type_not_allowed"
        )
        == 1
    )


@pytest.mark.parametrize("mood", ["ok", "fail", "hang"])
async def test_a_typing_indicator_never_holds_up_the_reply(pipeline: Pipeline, mood: str) -> None:
    pipeline.connector = source = PictureSource(typing=mood)
    worker = pipeline.worker()
    partition, entry = await pipeline.inbound(said("hello", event_id="ev-1"))
    async with asyncio.timeout(2):  # far below the indicator's own 5 s timeout
        await worker.handle(partition, entry)
    assert len(await pipeline.outbox(CUSTOMER)) == 1
    await asyncio.sleep(0.01)  # the indicator's task gets its turn
    assert len(source.typing_shown) == 1
    if mood != "hang":
        outcome = "shown" if mood == "ok" else "failed"
        assert pipeline.count("flowbiz_typing_indicators_total", channel="http", outcome=outcome)
    for task in list(worker.typing._tasks):
        task.cancel()


async def test_a_persona_may_turn_its_typing_indicator_off(pipeline: Pipeline) -> None:
    pipeline.connector = source = PictureSource()
    worker = pipeline.worker()
    worker.personas = {
        name: p.model_copy(update={"typing": False}) for name, p in worker.personas.items()
    }
    partition, entry = await pipeline.inbound(said("hello", event_id="ev-1"))
    await worker.handle(partition, entry)
    assert len(await pipeline.outbox(CUSTOMER)) == 1
    assert source.typing_shown == []


def test_an_action_keeps_its_kind() -> None:
    from gateway.choices import answered_choice

    action = said("1", event_id="e").model_copy(update={"kind": EventKind.ACTION})
    assert answered_choice(action, {"choices": ["x"]}) is action


async def test_a_redelivered_answered_message_fetches_its_files_once(
    pipeline: Pipeline, media: MediaService
) -> None:
    """A crash between commit and ack hands the entry out again: it is acknowledged, not
    answered, and its file is not fetched (nor kept) a second time."""
    pipeline.connector = source = PictureSource()
    partition, entry = await pipeline.inbound(_photo("ev-1"))
    worker = pipeline.worker()
    worker.media = media
    await worker.handle(partition, entry)
    await worker.handle(partition, entry)  # the same entry again, as after a crash
    assert source.fetches == 1
    assert len(await media.blobs.list_conversation("acme", CUSTOMER.key)) == 1
    assert len(await pipeline.outbox(CUSTOMER)) == 1
