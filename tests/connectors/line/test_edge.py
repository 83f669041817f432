"""The LINE edge's own signature check agrees with the SDK's, and replay of a kept event."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from linebot.v3.webhook import SignatureValidator

from connectors.line.edge import signature_matches
from connectors.line.emulator import sign_body
from gateway.deadletters import list_dead_letters, replay
from tests.connectors.line.conftest import ALICE
from tests.harness import eventually


@given(secret=st.text(min_size=1, max_size=40), body=st.text(max_size=300), flip=st.booleans())
def test_signature_check_gives_the_sdk_verdict(secret: str, body: str, flip: bool) -> None:
    signature = sign_body(secret, body.encode())
    if flip:  # a signature of other bytes, or garbage
        signature = sign_body(secret, body.encode() + b" ") if body else "garbage=="
    ours = signature_matches(secret.encode(), body.encode(), signature)
    assert ours == SignatureValidator(secret).validate(body, signature)


@given(secret=st.text(min_size=1, max_size=40), signature=st.text(max_size=60))
def test_any_header_text_is_judged_without_error(secret: str, signature: str) -> None:
    body = b'{"events":[]}'
    assert signature_matches(secret.encode(), body, signature) == SignatureValidator(
        secret
    ).validate(body.decode(), signature)


async def test_a_dead_lettered_event_replays_onto_the_inbox_as_it_came(
    line_gateway, sender, emulator
):
    """The kept envelope goes back on the inbox unchanged and is parsed again."""
    async with line_gateway() as gw:
        line = sender(gw.url)
        incomplete = line.text("hello", user_id=ALICE)
        del incomplete["message"]["quoteToken"]
        assert await line.post([incomplete]) == 200
        rt = gw.runtime
        assert rt.store is not None
        [(handle, first)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
        assert await replay(rt.store, rt.keyspace, handle)
        assert not await replay(rt.store, rt.keyspace, handle)  # once

        async def letters_again() -> list[object]:
            letters = await list_dead_letters(rt.store, rt.keyspace)
            return [letter for _, letter in letters if letter.id != first.id]

        [(second)] = await eventually(letters_again)
        assert second.raw == first.raw  # byte for byte the same envelope
        assert emulator.deliveries == []
