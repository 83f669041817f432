"""Usage, personas with the playground, and health, in a real browser: each page renders
for an admin, a tenant-scoped viewer sees only their tenant's usage, the playground
round-trips a message through the HTTP channel and shows four previews, and a viewer can
use the playground neither through the page nor with a forged POST."""

from __future__ import annotations

import pytest

from gateway.admin.keys import Role
from gateway.usage import read_usage
from tests.console.conftest import ALICE, console_gateway, shot, sign_in
from tests.harness import eventually

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def _line_turn(console) -> None:  # type: ignore[no-untyped-def]
    line = console.line
    assert await line.post([line.text("hello", user_id=ALICE)]) == 200
    await eventually(lambda: console.emulator.deliveries_to(ALICE), timeout=5)


async def test_usage_personas_and_health_render_for_an_admin(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        await _line_turn(console)
        page = await sign_in(browser, console, await console.key("Ada", Role.ADMIN))
        nav = await page.locator("header nav a").all_inner_texts()
        assert {"Usage", "Personas", "Health"} <= set(nav)

        await page.goto(console.url + "usage?tenant=acme")
        assert await page.locator("figure.chart svg rect").count() > 0
        rows = page.locator("#usage-rows tbody tr", has_text="line")
        assert "core" in await rows.first.inner_text()
        assert await page.locator("#quota").inner_text() != ""
        tenants = await page.locator("select[name=tenant] option").all_inner_texts()
        assert tenants == ["acme", "beta"]
        await shot(page, "usage")

        await page.goto(console.url + "personas")
        assert "core" in await page.locator("#reach").inner_text()
        assert await page.locator("[data-persona=core]").count() == 1
        await shot(page, "personas")

        await page.goto(console.url + "health")
        assert await page.inner_text("#status") == "ok"
        partitions = console.gw.runtime.keyspace.partitions
        assert await page.locator("#partitions tbody tr").count() == partitions
        assert "worker" in await page.locator("#processes").inner_text()
        await shot(page, "health")
        await page.context.close()


async def test_tenant_scoped_viewer_sees_only_their_tenants_usage(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        await _line_turn(console)  # acme has usage; beta has none
        page = await sign_in(browser, console, await console.key("Vic", Role.VIEWER, "beta"))
        await page.goto(console.url + "usage")
        tenants = await page.locator("select[name=tenant] option").all_inner_texts()
        assert tenants == ["beta"]
        assert "acme" not in await page.locator("main").inner_text()
        response = await page.goto(console.url + "usage?tenant=acme")
        assert response is not None
        assert response.status == 404
        await page.goto(console.url + "personas")
        reach = await page.locator("#reach tbody").inner_text()
        assert "beta" in reach
        assert "acme" not in reach
        await page.context.close()


async def test_playground_round_trips_and_shows_four_previews(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        page = await sign_in(browser, console, await console.key("Dana", Role.OPERATOR))
        await page.goto(console.url + "personas")
        await page.select_option("#playground select[name=tenant]", "beta")
        await page.select_option("#playground select[name=persona]", "core")
        await page.fill("#playground textarea[name=text]", "pricing?")
        await page.click("#playground-send")
        await page.wait_for_selector("#previews", timeout=10_000)
        previews = page.locator("#previews .preview")
        assert await previews.count() == 4
        kinds = [await previews.nth(n).get_attribute("data-channel") for n in range(4)]
        assert kinds == ["slack", "line", "whatsapp", "email"]
        for n in range(4):
            assert "Pro costs 29 a month." in await previews.nth(n).inner_text()
        assert "Acme Helper" in await page.locator(".preview-email .headers").inner_text()
        await shot(page, "playground")

        # A reply with a card, an option list and a quick reply keeps them in the previews:
        # the text-only channels show them in the shared numbered form.
        await page.fill("#playground textarea[name=text]", "plans?")
        await page.click("#playground-send")
        await page.wait_for_selector(".preview-email >> text=Pro plan", timeout=10_000)
        for kind in ("whatsapp", "email"):
            shown = await page.locator(f".preview-{kind}").inner_text()
            assert "*Pro plan*" in shown
            assert "1. Free" in shown
            assert "2. Talk to a person" in shown

        # It went through the real channel: counted as beta's HTTP traffic.
        rt = console.gw.runtime
        assert rt.store is not None
        rows = await read_usage(rt.store, rt.keyspace, tenant="beta")
        assert [(r.channel, r.inbound, r.outbound) for r in rows] == [("http", 2, 2)]
        await page.context.close()


async def test_attack_viewer_forged_playground_post_refused(browser, tmp_path, personas_dir):
    async with console_gateway(tmp_path, personas_dir) as console:
        page = await sign_in(browser, console, await console.key("Vic", Role.VIEWER))
        await page.goto(console.url + "personas")
        assert await page.locator("#playground-unavailable").count() == 1
        assert await page.locator("#playground-form").count() == 0
        csrf = await page.locator("header input[name=csrf]").get_attribute("value")
        # The viewer's own session and CSRF token, posting what the form would have.
        response = await page.request.post(
            console.url + "personas/playground",
            form={"csrf": csrf or "", "tenant": "beta", "persona": "core", "text": "pricing?"},
        )
        assert response.status == 403
        rt = console.gw.runtime
        assert rt.store is not None
        assert await read_usage(rt.store, rt.keyspace, tenant="beta") == []
        await page.context.close()


async def test_attack_scoped_operator_playground_on_another_tenant_refused(
    browser, tmp_path, personas_dir
):
    async with console_gateway(tmp_path, personas_dir) as console:
        token = await console.key("Oli", Role.OPERATOR, "acme")
        page = await sign_in(browser, console, token)
        await page.goto(console.url + "personas")
        # acme has no HTTP channel: nothing to offer; beta is another tenant's.
        assert await page.locator("#playground-form").count() == 0
        csrf = await page.locator("header input[name=csrf]").get_attribute("value")
        response = await page.request.post(
            console.url + "personas/playground",
            form={"csrf": csrf or "", "tenant": "beta", "persona": "core", "text": "pricing?"},
        )
        assert response.status == 403
        rt = console.gw.runtime
        assert rt.store is not None
        assert await read_usage(rt.store, rt.keyspace, tenant="beta") == []
        await page.context.close()
