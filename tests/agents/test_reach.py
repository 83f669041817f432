"""Reachability: which channel block a message came through, persona access, `flowbiz check`."""

import pytest
import yaml

from agents.persona import Persona, PersonaAccess
from gateway.cli import main
from gateway.config import parse_config
from gateway.models import (
    Channel,
    ConversationKey,
    EmailReplyContext,
    InboundMessage,
    Participant,
    SlackReplyContext,
)
from gateway.reach import Point, point_of, reachable
from tests.agents.test_access_attacks import PERSONAS


def slack_block(team, **extra):
    return {
        "kind": "slack",
        "id": f"ws-{team.lower()}",
        "team_id": team,
        "signing_secret": "env:T_SIGN",
        "bot_token": "env:T_API_KEY",
        **extra,
    }


def slack_message(team, channel="C0OPS"):
    return InboundMessage(
        event_id="e",
        conversation=ConversationKey(tenant="acme", channel=Channel.SLACK, conversation_id=channel),
        sender=Participant(id="U1"),
        reply_context=SlackReplyContext(team_id=team, channel_id=channel),
    )


@pytest.fixture
def personas_dir(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    for name, text in PERSONAS.items():
        (folder / f"{name}.yaml").write_text(text)
    return folder


def test_the_slack_workspace_decides_whether_a_message_is_internal(personas_dir):
    """Own workspace internal, a customer's workspace not; one tenant holds both."""
    config = parse_config(
        {
            "personas_dir": str(personas_dir),
            "tenants": [
                {
                    "id": "acme",
                    "channels": [
                        slack_block("TOWN", internal=True),
                        slack_block("TCUST", persona_switch=False),
                    ],
                }
            ],
        }
    )
    own = point_of(config, slack_message("TOWN"))
    customer = point_of(config, slack_message("TCUST"))
    assert (own.internal, own.switch, own.address) == (True, True, "C0OPS")
    assert (customer.internal, customer.switch) == (False, False)
    stranger = point_of(config, slack_message("TOTHER"))  # no block serves it: not internal
    assert not stranger.internal


def test_access_limits_tenants_kinds_and_addresses():
    """Every condition of `access` must hold; an address is matched as the platform gives it."""
    ops = Persona(
        name="ops",
        display_name="Ops",
        access=PersonaAccess(tenants=("acme",), channels=("slack:C0OPS", "email:Ops@Acme.example")),
    )
    point = Point(tenant="acme", kind="slack", address="C0OPS", internal=False, switch=True)
    assert reachable(ops, point)
    assert not reachable(ops, Point("acme", "slack", "C0GENERAL", False, True))
    assert not reachable(ops, Point("other", "slack", "C0OPS", False, True))
    email = InboundMessage(
        event_id="e",
        conversation=ConversationKey(tenant="acme", channel=Channel.EMAIL, conversation_id="r"),
        sender=Participant(id="a@b.c"),
        reply_context=EmailReplyContext(
            message_id="m", from_address="a@b.c", to_address="OPS@acme.example"
        ),
    )
    config = parse_config({"personas_dir": ".", "tenants": [{"id": "acme"}]})
    assert reachable(ops, point_of(config, email))
    with pytest.raises(ValueError, match="channel kind"):
        PersonaAccess(channels=("sms",))


def test_host_tools_make_a_persona_internal_only_unless_it_says_otherwise():
    """run_command implies internal_only; `internal_only: false` opens it explicitly."""
    host = Persona(name="h", display_name="H", tools=("run_command",))
    public = Point("acme", "http", None, internal=False, switch=True)
    internal = Point("acme", "http", None, internal=True, switch=True)
    assert not reachable(host, public)
    assert reachable(host, internal)
    opened = host.model_copy(update={"access": PersonaAccess(internal_only=False)})
    assert reachable(opened, public)
    staff = Persona(name="s", display_name="S", access=PersonaAccess(internal_only=True))
    assert not reachable(staff, public)


def write_config(tmp_path, personas_dir, **routing):
    data = {
        "personas_dir": str(personas_dir),
        "routing": {"default_persona": "core", **routing},
        "tenants": [
            {
                "id": "acme",
                "channels": [
                    {"kind": "http", "api_keys": ["env:T_API_KEY"]},
                ],
            },
            {
                "id": "acme-ops",
                "default_persona": "oncall",
                "channels": [{"kind": "http", "internal": True, "api_keys": ["env:T_API_KEY"]}],
            },
        ],
    }
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_check_prints_who_may_reach_which_persona(tmp_path, personas_dir, capsys):
    """One row per tenant channel, oncall only where the tenant marked the channel internal."""
    assert main(["check", str(write_config(tmp_path, personas_dir))]) == 0
    out = capsys.readouterr().out
    assert "acme      http     no        on      core, docs\n" in out
    assert "acme-ops  http     yes       on      core, docs, oncall\n" in out


def test_check_reports_a_default_persona_no_one_may_reach(tmp_path, personas_dir, capsys):
    """A global default that is internal-only leaves the public channel without one: an error."""
    path = write_config(tmp_path, personas_dir, default_persona="oncall")
    assert main(["check", str(path)]) == 1
    err = capsys.readouterr().err
    assert "tenants.0.channels.0: no default persona may answer on this channel" in err


def test_check_warns_about_skipped_rules_and_opened_host_tools(tmp_path, personas_dir, capsys):
    """Warnings: a rule whose persona may not answer somewhere, legacy allow prefixes."""
    (personas_dir / "legacy.yaml").write_text(
        yaml.safe_dump(
            {
                "name": "legacy",
                "display_name": "Legacy",
                "tools": ["run_command"],
                "access": {"internal_only": False},
                "agent": {
                    "kind": "llm",
                    "options": {
                        "base_url": "http://127.0.0.1:9/v1",
                        "model": "m",
                        "tool_options": {"run_command": {"allow": ["df -h"]}},
                    },
                },
            }
        )
    )
    path = write_config(tmp_path, personas_dir, rules=[{"persona": "oncall", "keywords": ["x"]}])
    assert main(["check", str(path)]) == 0
    out = capsys.readouterr().out
    assert "routing.rules.0: 'oncall' may not answer on acme/http; the rule is skipped" in out
    assert "personas.legacy.access.internal_only: has host tools (run_command)" in out
    assert "personas.legacy.tool_options.run_command.allow: each entry is now one exact" in out
