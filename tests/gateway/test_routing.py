"""Persona routing: switch command, stickiness, rules, defaults."""

from datetime import timedelta

import pytest

from agents.persona import load_personas
from gateway.config import parse_config
from gateway.models import Channel, ConversationKey, InboundMessage, Participant, utcnow
from gateway.routing import Router
from gateway.state import ConversationState
from tests.harness import PERSONAS_DIR


@pytest.fixture
def router():
    config = parse_config(
        {
            "personas_dir": str(PERSONAS_DIR),
            "routing": {
                "default_persona": "core",
                "rules": [
                    {"persona": "infra", "keywords": ["outage"]},
                    {"persona": "docs", "channel": "email", "regex": "(?i)manual"},
                ],
            },
            "tenants": [{"id": "acme", "default_persona": "docs"}, {"id": "other"}],
        }
    )
    return Router(config=config, personas=load_personas(PERSONAS_DIR))


def _msg(text, tenant="other", channel=Channel.HTTP):
    return InboundMessage(
        event_id="e",
        conversation=ConversationKey(tenant=tenant, channel=channel, conversation_id="c"),
        sender=Participant(id="u"),
        text=text,
    )


def _state(msg):
    return ConversationState(conversation=msg.conversation)


def test_switch_command_wins_and_is_stripped(router):
    """`/persona docs …` picks docs and the agent sees only the rest of the text."""
    msg = _msg("/persona docs how to install")
    route = router.route(msg, _state(msg), utcnow())
    assert (route.persona, route.reason, route.remaining_text) == (
        "docs",
        "switch",
        "how to install",
    )


def test_unknown_switch_target_gets_the_gateway_answer(router):
    """A switch to a persona that does not exist is answered by the gateway, listing the
    personas reachable here, from whoever the rest of the text routes to."""
    msg = _msg("/persona nobody outage")
    route = router.route(msg, _state(msg), utcnow())
    assert (route.persona, route.reason) == ("infra", "switch-unknown")
    assert route.reply == "There is no such persona here. You can switch to: core, docs, infra."


def test_sticky_persona_holds_until_it_expires(router):
    """A conversation stays with its persona for the sticky period, then routes afresh."""
    msg = _msg("outage!")
    now = utcnow()
    state = _state(msg).model_copy(
        update={"persona": "docs", "persona_until": now + timedelta(seconds=60)}
    )
    assert router.route(msg, state, now).reason == "sticky"
    assert router.route(msg, state, now + timedelta(seconds=61)).persona == "infra"


def test_rule_conditions_all_apply(router):
    """A rule limited to a channel does not fire on another channel."""
    assert router.route(_msg("the manual"), _state(_msg("")), utcnow()).persona == "core"
    email = _msg("the manual", channel=Channel.EMAIL)
    assert router.route(email, _state(email), utcnow()).reason == "rule:1"


def test_tenant_default_then_global_default(router):
    """Without a rule, the tenant's default persona answers, else the global one."""
    acme = _msg("hi", tenant="acme")
    assert router.route(acme, _state(acme), utcnow()).reason == "tenant-default"
    assert router.route(_msg("hi"), _state(_msg("hi")), utcnow()).persona == "core"
