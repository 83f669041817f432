"""Files both ways through the running gateway: a photo a person sends is fetched from
Slack's file host with the bot token, kept, and echoed back through the external upload
byte for byte, once even when a step fails; a file said to be anywhere else is never
fetched and never sees the token; a file over the tenant's limit is refused and the text
still answered."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agents.registry import AGENT_KINDS
from connectors.slack.emulator import SlackEmulator, event_callback, message_event
from gateway.deadletters import list_dead_letters
from tests.connectors.slack.conftest import ACME, sender_for
from tests.connectors.slack.rich import ScriptedAgent, png, rich_config
from tests.harness import eventually, running_gateway


@pytest.fixture(autouse=True)
def scripted_agent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(AGENT_KINDS, "scripted", ScriptedAgent)


@pytest.fixture
def config(store_url: str, personas_dir: Path, emulator: SlackEmulator, tmp_path: Path):
    def make(**channel: Any) -> dict[str, Any]:
        return rich_config(store_url, personas_dir, emulator, tmp_path, **channel)

    return make


def _file_event(text: str, *files: dict[str, Any], **fields: Any) -> dict[str, Any]:
    event = message_event(text=text, subtype="file_share", files=list(files), **fields)
    return event_callback(event)


def _kept(media_dir: Path) -> list[bytes]:
    return [p.read_bytes() for p in media_dir.rglob("*") if p.is_file() and p.suffix != ".json"]


async def test_a_sent_photo_is_kept_and_echoed_back_byte_identical(
    config, emulator, session, tmp_path: Path
) -> None:
    photo = png(64, 64, filler=7)
    entry = emulator.files.host(photo, name="receipt.png")
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("echo my receipt", entry))
        [uploaded] = await emulator.wait_for_uploads(1)
        [post] = await emulator.wait_for_posts(1)
        assert await eventually(lambda: _media(gw, "out", "sent")) == 1.0
        assert _media(gw, "in", "kept") == 1.0
    assert uploaded.data == photo
    assert (uploaded.name, uploaded.channel, uploaded.thread_ts) == (
        "receipt.png",
        "D0DIRECT",
        None,
    )
    assert post.shown_text == "echo my receipt"
    assert photo in _kept(tmp_path / "media")
    # Fetched once, from the download URL, with the workspace's bot token.
    assert emulator.files.downloads == [
        (entry["url_private_download"].removeprefix(emulator.base_url), ACME.bot_token)
    ]
    methods = [c.method for c in emulator.calls]
    assert methods.index("chat.postMessage") < methods.index("files.completeUploadExternal")


async def test_a_threaded_upload_goes_into_the_thread(config, emulator, session) -> None:
    entry = emulator.files.host(png(filler=3))
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(
            _file_event("echo in thread", entry, thread_ts="1700000000.000001")
        )
        [uploaded] = await emulator.wait_for_uploads(1)
    assert uploaded.thread_ts == "1700000000.000001"


async def test_a_kept_image_on_a_card_is_uploaded_after_the_post(config, emulator, session) -> None:
    photo = png(8, 8, filler=42)
    entry = emulator.files.host(photo)
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("framed", entry))
        [uploaded] = await emulator.wait_for_uploads(1)
        [post] = await emulator.wait_for_posts(1)
    assert uploaded.data == photo
    assert uploaded.title == "Your photo"
    card = post.blocks[1]
    assert card["text"]["text"] == "*Your photo*\nWe got it."
    assert "accessory" not in card


async def test_an_upload_is_shared_once_when_its_completion_fails_then_succeeds(
    config, emulator, session
) -> None:
    """The post went out and is recorded; the upload's sharing fails (500) and is retried:
    one post, one file, nothing dead-lettered."""
    emulator.fail_next("files.completeUploadExternal", status=500, error="internal_error")
    photo = png(filler=9)
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("echo again", emulator.files.host(photo)))
        await emulator.wait_for_uploads(1)
        await eventually(
            lambda: [c for c in emulator.calls if c.method == "files.completeUploadExternal"][1:]
        )
        assert await list_dead_letters(gw.runtime.store, gw.runtime.keyspace) == []
    assert len(emulator.posted) == 1
    assert [u.data for u in emulator.files.uploaded] == [photo]


async def test_a_retry_after_the_second_file_failed_does_not_share_the_first_again(
    config, emulator, session
) -> None:
    first, second = png(filler=11), png(filler=12)
    emulator.fail_next("files.completeUploadExternal", status=429, retry_after=0, after=1)
    entries = [emulator.files.host(first, name="a.png"), emulator.files.host(second, name="b.png")]
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("echo two", *entries))
        await emulator.wait_for_uploads(2)
        await eventually(lambda: any(c.error == "ratelimited" for c in emulator.calls))
        assert await list_dead_letters(gw.runtime.store, gw.runtime.keyspace) == []
    assert [u.data for u in emulator.files.uploaded] == [first, second]
    assert len(emulator.posted) == 1


async def test_a_sharing_whose_answer_was_lost_is_not_resent(config, emulator, session) -> None:
    """files.completeUploadExternal shared the file but the answer broke off: the reply is
    dead-lettered outcome_unknown for an operator, never shared a second time."""
    emulator.drop_next("files.completeUploadExternal")
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("echo lost", emulator.files.host(png())))
        letters = await eventually(lambda: list_dead_letters(gw.runtime.store, gw.runtime.keyspace))
    [(_, letter)] = letters
    assert letter.code == "outcome_unknown"
    assert len(emulator.files.uploaded) == 1
    assert len(emulator.posted) == 1


@pytest.fixture
async def elsewhere() -> AsyncIterator[tuple[str, list[web.Request]]]:
    """Another server on loopback, recording every request it gets."""
    seen: list[web.Request] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(request)
        return web.Response(body=png(filler=1), content_type="image/png")

    app = web.Application()
    app.router.add_route("*", "/{path:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", seen
    await runner.cleanup()


@pytest.mark.parametrize(
    "spelling",
    [
        "{other}/files-pri/T0FLOWBIZ-F0EVIL/download/evil.png",  # another host
        "{slack}@{other_host}/files-pri/x.png",  # the files host as user info
    ],
)
async def test_a_file_said_to_be_elsewhere_is_never_fetched_nor_given_the_token(
    config, emulator, session, elsewhere, spelling: str
) -> None:
    other, seen = elsewhere
    url = spelling.format(
        other=other, slack=emulator.base_url, other_host=other.removeprefix("http://")
    )
    entry = {**emulator.files.host(png()), "url_private": url, "url_private_download": url}
    async with running_gateway(config()) as gw:
        await sender_for(session, gw).event(_file_event("echo look at this", entry))
        [post] = await emulator.wait_for_posts(1)
        refused = await eventually(lambda: _events(gw, "file_host_refused"))
    assert post.shown_text == "echo look at this"  # the text is answered
    assert refused == 1.0
    assert seen == []  # nothing reached the other server: no fetch, no token
    assert emulator.files.downloads == []
    assert emulator.files.uploaded == []  # nothing was kept to send back


def _events(gw, event: str) -> float | None:
    prefix = f'flowbiz_channel_events_total{{channel="slack",event="{event}"}}'
    for line in gw.runtime.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


def _media_refused(gw, reason: str) -> float | None:
    return _media(gw, "in", reason)


def _media(gw, direction: str, outcome: str) -> float | None:
    prefix = f'flowbiz_media_total{{channel="slack",direction="{direction}",outcome="{outcome}"}}'
    for line in gw.runtime.metrics.render().decode().splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return None


@pytest.mark.parametrize("says_size", [True, False])
async def test_a_file_over_the_limit_is_refused_and_the_text_answered(
    config, emulator, session, tmp_path: Path, says_size: bool
) -> None:
    """Over the tenant's max_bytes: refused whether Slack says the size (not fetched) or
    not (the read stops at the limit)."""
    big = png(400, 100)
    assert len(big) > 100_000
    entry = emulator.files.host(big, name="big.png")
    if not says_size:
        entry.pop("size")
    data = config()
    data["tenants"][0]["media"] = {"max_bytes": 50_000}
    async with running_gateway(data) as gw:
        await sender_for(session, gw).event(_file_event("echo big one", entry))
        [post] = await emulator.wait_for_posts(1)
        assert await eventually(lambda: _media_refused(gw, "too_large")) == 1.0
    assert post.shown_text == "echo big one"
    assert emulator.files.uploaded == []
    assert big not in _kept(tmp_path / "media")
    assert len(emulator.files.downloads) == (0 if says_size else 1)


async def test_a_kept_file_gone_before_the_send_goes_as_its_text_form(
    config, emulator, session, tmp_path: Path
) -> None:
    """The blob was erased between the turn and the send: the file's text form is posted."""
    entry = emulator.files.host(png(filler=5), name="gone.png")
    async with running_gateway(
        config(),
    ) as gw:
        # Held back by a first refusal of the post, long enough to erase the kept file.
        emulator.fail_next("chat.postMessage", status=429, retry_after=1)
        await sender_for(session, gw).event(_file_event("echo vanishing", entry))
        await eventually(lambda: any(c.error == "ratelimited" for c in emulator.calls))
        for path in (tmp_path / "media").rglob("*"):
            if path.is_file():
                path.unlink()
        posts = await emulator.wait_for_posts(2)
        assert _media(gw, "out", "degraded") == 1.0
        assert _media(gw, "out", "sent") is None
    assert [p.shown_text for p in posts] == ["echo vanishing", "[gone.png]"]
    assert emulator.files.uploaded == []
