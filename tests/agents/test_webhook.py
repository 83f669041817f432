"""The webhook agent against the real example bot over loopback: signing, answers, retries, SSRF."""

import asyncio

import pytest
from aiohttp import web

from agents.persona import Persona
from agents.registry import build_agent
from agents.webhook import WebhookAgent, refusal_reason
from gateway.conversations import parse_handle
from gateway.errors import AgentError
from tests.agents.conftest import make_context, turn


def persona_for(url: str, **options) -> Persona:
    agent_options = {
        "url": url,
        "secrets_env": ["BOT_SECRET", "BOT_SECRET_OLD"],
        "allow_private_network": True,
        "retry_base_seconds": 0.01,
        **options,
    }
    return Persona.model_validate(
        {
            "name": "faq",
            "display_name": "FAQ",
            "agent": {"kind": "webhook", "options": agent_options},
        }
    )


async def test_bot_verifies_signature_made_with_either_rotation_secret_and_answers_inline(faq_bot):
    """The bot, holding only the old secret, verifies the two-secret header and answers inline."""
    persona = persona_for(faq_bot.url)
    agent = build_agent(persona)
    context = make_context(persona, "what are your opening hours?", history=(turn("user", "hi"),))
    reply = await agent.respond(context)
    assert [p.text for p in reply.parts] == ["We are open Monday to Friday, 9:00 to 18:00."]
    call = faq_bot.bot.calls[0]
    assert call["headers"]["X-FlowBiz-Idempotency-Key"] == context.message.id
    assert call["headers"]["X-FlowBiz-Signature"].count("v1=") == 2
    payload = call["payload"]
    assert payload["persona"]["name"] == "faq"
    assert payload["history"][0]["text"] == "hi"
    assert payload["capabilities"]["buttons"] is True
    conversation = payload["message"]["conversation"]
    assert parse_handle(conversation["handle"]) == conversation["key"] == "acme/http/c1"
    assert "raw" not in payload["message"]
    assert "reply_context" not in payload["message"]


async def test_bot_rejects_a_wrong_secret_and_the_agent_fails(faq_bot, monkeypatch):
    """A request signed with secrets the bot does not hold gets 401, a permanent agent error."""
    monkeypatch.setenv("BOT_SECRET", "wrong")
    monkeypatch.setenv("BOT_SECRET_OLD", "also-wrong")
    agent = build_agent(persona_for(faq_bot.url))
    with pytest.raises(AgentError, match="401"):
        await agent.respond(make_context(persona_for(faq_bot.url), "hours"))
    assert faq_bot.bot.rejected == 1


async def test_buttons_and_handoff_from_the_bot_reach_the_reply(faq_bot):
    """Buttons in parts and a handoff request are carried into the AgentReply."""
    persona = persona_for(faq_bot.url)
    agent = build_agent(persona)
    unknown = await agent.respond(make_context(persona, "tell me a joke"))
    assert [b.value for b in unknown.parts[0].buttons] == ["hours", "pricing"]
    human = await agent.respond(make_context(persona, "I want a human"))
    assert human.handoff == "asked for a person"
    assert human.parts[0].text == "Let me get a colleague for you."


async def test_transient_failures_are_retried_with_the_same_idempotency_key(faq_bot):
    """Two 503s then success: three calls, one idempotency key, fresh signatures."""
    faq_bot.bot.fail_next = 2
    persona = persona_for(faq_bot.url, retries=2)
    reply = await build_agent(persona).respond(make_context(persona, "pricing?"))
    assert reply.parts[0].text.startswith("Plans:")
    keys = {c["headers"]["X-FlowBiz-Idempotency-Key"] for c in faq_bot.bot.calls}
    attempts = [c["headers"]["X-FlowBiz-Attempt"] for c in faq_bot.bot.calls]
    assert len(keys) == 1
    assert attempts == ["1", "2", "3"]


async def test_gives_up_after_the_configured_retries(faq_bot):
    """More failures than retries: an AgentError after exactly retries + 1 calls."""
    faq_bot.bot.fail_next = 5
    persona = persona_for(faq_bot.url, retries=1)
    with pytest.raises(AgentError, match="2 tries"):
        await build_agent(persona).respond(make_context(persona, "pricing?"))
    assert len(faq_bot.bot.calls) == 2


async def test_202_means_the_bot_answers_later_and_a_slow_bot_times_out():
    """202 yields no parts (answer later); a bot slower than the attempt timeout is retried."""
    calls = []

    async def handler(request: web.Request) -> web.Response:
        calls.append(request.headers["X-FlowBiz-Attempt"])
        if request.query.get("slow") and len(calls) == 1:
            await asyncio.sleep(1)
        return web.Response(status=202)

    app = web.Application()
    app.router.add_post("/bot", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    try:
        persona = persona_for(f"http://127.0.0.1:{port}/bot?slow=1", attempt_timeout_seconds=0.2)
        reply = await build_agent(persona).respond(make_context(persona, "hi"))
        assert reply.parts == ()
        assert reply.handoff is None
        assert calls == ["1", "2"]
    finally:
        await runner.cleanup()


async def test_loopback_target_is_refused_without_allow_private_network(faq_bot):
    """127.0.0.1 is refused (nothing is sent) unless the persona allows private networks."""
    persona = persona_for(faq_bot.url, allow_private_network=False)
    with pytest.raises(AgentError, match="loopback"):
        await build_agent(persona).respond(make_context(persona, "hours"))
    assert faq_bot.bot.calls == []


async def test_hostname_resolving_to_loopback_is_refused_at_connect_time(faq_bot):
    """'localhost' passes URL validation but its resolved address is refused by the resolver."""
    url = faq_bot.url.replace("127.0.0.1", "localhost")
    persona = persona_for(url, allow_private_network=False)
    with pytest.raises(AgentError, match="refused"):
        await build_agent(persona).respond(make_context(persona, "hours"))
    assert faq_bot.bot.calls == []


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("10.1.2.3", "private"),
        ("169.254.169.254", "link-local"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("240.0.0.1", "reserved"),
        ("100.64.0.1", "not globally routable"),
        ("93.184.216.34", None),
    ],
)
def test_refusal_reason_classifies_addresses(address, reason):
    """Metadata, private, mapped-loopback and CGNAT addresses are refused; public ones pass."""
    import ipaddress

    assert refusal_reason(ipaddress.ip_address(address)) == reason


def test_options_require_an_http_url_and_a_secret():
    """A non-http URL or a missing secret name is a configuration error at load time."""
    with pytest.raises(ValueError, match="http"):
        WebhookAgent.from_options({"url": "file:///etc/passwd", "secrets_env": ["X"]})
    with pytest.raises(ValueError, match="secrets_env"):
        WebhookAgent.from_options({"url": "https://bot.example.com/"})
