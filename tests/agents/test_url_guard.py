"""The SSRF guard on the agents' URLs: the webhook bot's ``url`` and the LLM ``base_url``.

Real loopback servers (the example FAQ bot, the OpenAI emulator) stand in for an internal
service an attacker would aim a persona at: they must receive nothing unless the persona
says ``allow_private: true``.
"""

from __future__ import annotations

import pytest

from agents.registry import build_agent
from gateway.errors import AgentError
from tests.agents.conftest import make_context
from tests.agents.test_llm import llm_persona
from tests.agents.test_webhook import persona_for

MAPPED_LOOPBACK = ["[2002:7f00:1::]", "[64:ff9b::7f00:1]", "[::ffff:127.0.0.1]", "0x7f.1"]


@pytest.mark.parametrize("host", MAPPED_LOOPBACK)
async def test_attack_webhook_url_at_a_mapped_loopback_is_refused(faq_bot, host):
    """A bot URL at 6to4/NAT64/mapped/hex loopback is refused before anything is sent."""
    url = faq_bot.url.replace("127.0.0.1", host)
    persona = persona_for(url, allow_private_network=False, retries=0)
    with pytest.raises(AgentError, match="refused: a loopback"):
        await build_agent(persona).respond(make_context(persona, "hours"))
    assert faq_bot.bot.calls == []


async def test_webhook_allow_private_reaches_loopback(faq_bot):
    """``allow_private: true`` (the new name) lets the persona reach its bot on this host."""
    persona = persona_for(faq_bot.url, allow_private_network=False, allow_private=True)
    reply = await build_agent(persona).respond(make_context(persona, "hours"))
    assert reply.parts


@pytest.mark.parametrize("host", MAPPED_LOOPBACK)
async def test_attack_llm_base_url_at_a_mapped_loopback_is_refused(emulator, host):
    """An LLM base_url at a (mapped) loopback address is refused; the server sees nothing."""
    persona = llm_persona(emulator.base_url.replace("127.0.0.1", host), allow_private=False)
    with pytest.raises(AgentError, match="base_url is refused: a loopback"):
        await build_agent(persona).respond(make_context(persona, "hi"))
    assert emulator.requests == []


async def test_attack_llm_base_url_resolving_to_loopback_is_refused_at_connect(emulator):
    """``localhost`` passes the literal check; the connection to it is refused."""
    persona = llm_persona(emulator.base_url.replace("127.0.0.1", "localhost"), allow_private=False)
    with pytest.raises(AgentError, match="base_url is refused: localhost leads to a loopback"):
        await build_agent(persona).respond(make_context(persona, "hi"))
    assert emulator.requests == []
