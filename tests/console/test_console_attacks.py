"""The console as a door: who may act, whose conversations they see, forged requests.

Each test attacks one defence in a real browser (or with the browser's own cookies through
Playwright's request API, as a forged request from that browser would carry them)."""

from __future__ import annotations

import re

import pytest

from gateway.admin.keys import Role
from gateway.conversations import (
    conversation_handle,
    list_conversations,
    read_index_entry,
    read_state,
)
from gateway.deadletters import DeadLetter, list_dead_letters
from gateway.handoff import handoff_fact
from gateway.models import OutboundMessage, PersonaPresentation
from tests.console.conftest import ALICE, console_gateway, shot, sign_in
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _alice(console) -> str:
    """Alice writes on LINE and is answered; returns her conversation's key."""
    line = console.line
    assert await line.post([line.text("hello", user_id=ALICE)]) == 200
    await console.emulator.wait_for(1)
    rt = console.gw.runtime
    [entry] = await eventually(lambda: list_conversations(rt.store, rt.keyspace, "acme"))
    return entry.key


async def _bury(rt, letter: DeadLetter) -> None:
    """A dead letter as the dispatcher leaves it."""
    stream = rt.keyspace.dead_letters(letter.partition)
    await rt.store.append(stream, letter.model_dump_json().encode())


async def _csrf(page) -> str:
    html = await page.content()
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


async def test_attack_viewer_cannot_act_and_a_forged_post_from_their_session_is_refused(
    browser, tmp_path, personas_dir
):
    async with console_gateway(tmp_path, personas_dir) as console:
        key = await _alice(console)
        page = await sign_in(browser, console, await console.key("Vic", Role.VIEWER))
        handle = conversation_handle(key)
        await page.goto(console.url + f"c/{handle}")
        assert await page.locator("#take-over").count() == 0
        assert await page.locator("#send-reply").count() == 0
        assert "not act on it" in await page.inner_text("aside")
        assert "needs the operator role" in await page.inner_text("main")  # no history either
        await shot(page, "viewer")
        # The forged POST: the viewer's own session cookie and CSRF token, as a hand-made form.
        token = await _csrf(page)
        base = console.url + f"c/{handle}/"
        for action, form in [
            ("take-over", {}),
            ("reply", {"text": "forged", "reply_id": "0190c3e2-aaaa"}),
            ("release", {}),
            ("erase", {"confirm": "erase"}),
        ]:
            response = await page.request.post(
                base + action, form={"csrf": token, **form}, max_redirects=0
            )
            assert response.status == 403, action
        rt = console.gw.runtime
        state = await read_state(rt.store, rt.keyspace, key)
        assert state is not None
        assert handoff_fact(state) is None
        assert not any("forged" in t for t in console.emulator.texts_to(ALICE))
        await page.context.close()


async def test_attack_tenant_scoped_operator_never_sees_another_tenants_conversations(
    browser, tmp_path, personas_dir
):
    async with console_gateway(tmp_path, personas_dir) as console:
        key = await _alice(console)  # a conversation of tenant acme
        rt = console.gw.runtime
        letter = DeadLetter(kind="outbound", reason="test", tenant="acme", partition=0)
        await _bury(rt, letter)
        page = await sign_in(browser, console, await console.key("Bea", Role.OPERATOR, "beta"))
        assert "Alice" not in await page.inner_text("main")
        assert "No conversations yet." in await page.inner_text("#inbox-rows")
        handle = conversation_handle(key)
        for path in (f"c/{handle}", f"c/{handle}/export", f"c/{handle}/body"):
            response = await page.request.get(console.url + path)
            assert response.status == 404, path
        events = await page.request.get(
            console.url + f"events?topic=conversation&c={handle}", timeout=3000
        )
        assert events.status == 404
        token = await _csrf(page)
        response = await page.request.post(
            console.url + f"c/{handle}/take-over", form={"csrf": token}, max_redirects=0
        )
        assert response.status == 404
        [(dl_handle, _)] = await list_dead_letters(rt.store, rt.keyspace)
        await page.goto(console.url + "dead-letters")
        assert "No dead letters." in await page.inner_text("#dead-letters")
        response = await page.request.post(
            console.url + f"dead-letters/{dl_handle}/discard",
            form={"csrf": token},
            max_redirects=0,
        )
        assert response.status == 404
        assert len(await list_dead_letters(rt.store, rt.keyspace)) == 1
        state = await read_state(rt.store, rt.keyspace, key)
        assert state is not None
        assert handoff_fact(state) is None
        await page.context.close()


async def test_attack_post_without_or_with_a_wrong_csrf_token_is_refused(
    browser, tmp_path, personas_dir
):
    async with console_gateway(tmp_path, personas_dir) as console:
        key = await _alice(console)
        page = await sign_in(browser, console, await console.key("Olga", Role.OPERATOR))
        url = console.url + f"c/{conversation_handle(key)}/take-over"
        token = await _csrf(page)
        for form, headers in [
            ({}, {}),
            ({"csrf": "x" * 43}, {}),
            ({"csrf": token[:-1] + ("A" if token[-1] != "A" else "B")}, {}),
            ({"csrf": token}, {"Origin": "https://evil.example"}),  # right token, other site
        ]:
            response = await page.request.post(url, form=form, headers=headers, max_redirects=0)
            assert response.status == 403, (form, headers)
        rt = console.gw.runtime
        state = await read_state(rt.store, rt.keyspace, key)
        assert state is not None
        assert handoff_fact(state) is None
        refused = rt.metrics.registry.get_sample_value(
            "flowbiz_admin_errors_total", {"operation": "console", "error": "csrf"}
        )
        assert refused == 4
        # The same request with the session's token does what it says.
        response = await page.request.post(url, form={"csrf": token}, max_redirects=0)
        assert response.status == 303
        state = await read_state(rt.store, rt.keyspace, key)
        assert handoff_fact(state)["holder"]["name"] == "Olga"
        await page.context.close()


async def test_session_cookie_flags_sign_out_and_revoked_keys(browser, tmp_path, personas_dir):
    from gateway.admin import keys as apikeys

    async with console_gateway(tmp_path, personas_dir) as console:
        token = await console.key("Sam", Role.OPERATOR)
        page = await sign_in(browser, console, token)
        [cookie] = [c for c in await page.context.cookies() if c["name"] == "fb_console"]
        assert cookie["httpOnly"] is True
        assert cookie["sameSite"] == "Strict"
        assert cookie["secure"] is False  # plain HTTP here; Secure under TLS or when configured
        assert await page.evaluate("document.cookie") == ""
        await page.click("text=Sign out")
        await page.wait_for_url("**/console/sign-in")
        # The old cookie no longer opens anything (the session is gone from the store).
        await page.context.add_cookies([cookie])
        await page.goto(console.url + "inbox")
        assert "/console/sign-in" in page.url
        # A session of a key revoked afterwards ends at once.
        page = await sign_in(browser, console, token)
        rt = console.gw.runtime
        key_id = token.split("_")[1]
        await apikeys.revoke_key(rt.store, rt.keyspace, key_id)
        await page.goto(console.url + "inbox")
        assert "/console/sign-in" in page.url
        await page.context.close()


async def test_secure_cookie_when_configured(browser, tmp_path, personas_dir):
    http = {"operations": {"console": {"secure_cookie": "always"}}}
    async with (
        console_gateway(tmp_path, personas_dir, **http) as console,
        console.http.get(console.url + "sign-in") as response,
    ):
        assert "Secure" in response.headers["Set-Cookie"]


async def test_dead_letter_replay_delivers_once(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        key = await _alice(console)
        rt = console.gw.runtime
        entry = await read_index_entry(rt.store, rt.keyspace, "acme", key)
        message = OutboundMessage(
            conversation=entry.conversation,
            persona=PersonaPresentation(name="core", display_name="Acme Helper"),
            text="Your order has shipped.",
            idempotency_key="replay-test-1",
            reply_context=entry.reply_context,
        )
        partition = rt.keyspace.partition(key)
        letter = DeadLetter(
            kind="outbound",
            reason="LINE answered 500 four times",
            code="platform_error",
            channel="line",
            tenant="acme",
            conversation=key,
            partition=partition,
            message=message.model_dump(mode="json"),
        )
        await _bury(rt, letter)
        page = await sign_in(browser, console, await console.key("Rita", Role.OPERATOR))
        await page.goto(console.url + "dead-letters")
        row = page.locator("#dead-letters tr", has_text="LINE answered 500")
        await row.wait_for()
        await shot(page, "dead-letters")
        await row.locator("button", has_text="Replay").click()
        await page.locator(".flash", has_text="Replayed").wait_for()
        await eventually(lambda: "Your order has shipped." in console.emulator.texts_to(ALICE))
        assert await list_dead_letters(rt.store, rt.keyspace) == []
        assert console.emulator.texts_to(ALICE).count("Your order has shipped.") == 1
        await page.context.close()


async def test_attack_a_form_whose_content_type_cannot_be_parsed_is_refused_415(
    browser, tmp_path, personas_dir
):
    """``Content-Type: ;0*`` (the stdlib's header parser raises IndexError on it) on the
    sign-in form and on an action is a 415 the metric counts, not a server error."""
    async with console_gateway(tmp_path, personas_dir) as console:
        key = await _alice(console)
        page = await sign_in(browser, console, await console.key("Olga", Role.OPERATOR))
        token = await _csrf(page)
        broken = {"Content-Type": ";0*"}
        base = console.url.split("/console/")[0]
        for url, body in [
            (base + "/console/sign-in", b"key=x&signin_token=y"),
            (console.url + f"c/{conversation_handle(key)}/take-over", f"csrf={token}".encode()),
        ]:
            response = await page.request.post(url, data=body, headers=broken, max_redirects=0)
            assert response.status == 415, url
        rt = console.gw.runtime
        refused = rt.metrics.registry.get_sample_value(
            "flowbiz_admin_errors_total", {"operation": "console", "error": "unreadable_form"}
        )
        assert refused == 2
        state = await read_state(rt.store, rt.keyspace, key)
        assert state is not None
        assert handoff_fact(state) is None
        await page.context.close()
