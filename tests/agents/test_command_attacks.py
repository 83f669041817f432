"""Attacks on the command tool through the real gateway: an LLM persona asked to run things.

The OpenAI emulator plays a model that calls ``run_command`` with whatever follows "run " in
the customer's message (agents/examples/responders.py), so each test types the command an
attacker would get the model to ask for. The channel is internal, where the on-call persona
may be reached; what is tested here is what the tool itself lets through.
"""

import asyncio
import os
import subprocess

import aiohttp
import pytest
import yaml

from agents.emulators.openai import OpenAIEmulator
from agents.examples import PERSONAS_DIR
from agents.examples.responders import oncall_responder
from connectors.http_api.emulator import HttpChannelClient
from gateway.audit import AuditLog, digest
from gateway.models import Channel, ConversationKey
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

LLM_KEY = "sk-command-test"


@pytest.fixture(autouse=True)
def llm_env(monkeypatch):
    monkeypatch.setenv("ONCALL_API_KEY", LLM_KEY)


@pytest.fixture
async def llm():
    emulator = await OpenAIEmulator(api_key=LLM_KEY, responder=oncall_responder).start()
    yield emulator
    await emulator.stop()


def example_oncall(folder, llm):
    data = yaml.safe_load((PERSONAS_DIR / "oncall.yaml").read_text())
    data["agent"]["options"]["base_url"] = llm.base_url
    (folder / "oncall.yaml").write_text(yaml.safe_dump(data))


def custom_oncall(folder, llm, run_command):
    """The example on-call persona with other ``run_command`` options."""
    data = yaml.safe_load((PERSONAS_DIR / "oncall.yaml").read_text())
    data["agent"]["options"]["base_url"] = llm.base_url
    data["agent"]["options"]["tool_options"] = {"run_command": run_command}
    (folder / "oncall.yaml").write_text(yaml.safe_dump(data))


def replies_of(receiver, conversation_id, count):
    mine = [c.payload for c in receiver.unique() if c.payload["conversation_id"] == conversation_id]
    return mine if len(mine) >= count else None


async def converse(tmp_path, receiver, messages, *, conversations=("c1",)):
    """Send each message on each conversation (conversations concurrently); their replies."""
    tenant = http_tenant(receiver.url)
    tenant["channels"][0]["internal"] = True
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant])
    data["personas_dir"] = str(tmp_path / "personas")
    data["routing"] = {"default_persona": "oncall"}
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        web = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )

        async def one(conversation):
            for n, text in enumerate(messages):
                await web.send(
                    conversation_id=conversation, text=text, event_id=f"{conversation}-{n}"
                )
                await eventually(lambda c=n + 1: replies_of(receiver, conversation, c))
            return [r["text"] for r in replies_of(receiver, conversation, len(messages))]

        answers = await asyncio.gather(*(one(c) for c in conversations))
        rt = gw.runtime
        audit = [e for _, e in await AuditLog(rt.store, rt.keyspace).read(tenant="acme")]
    return answers, audit


@pytest.fixture
def personas(tmp_path):
    folder = tmp_path / "personas"
    folder.mkdir()
    return folder


async def test_attack_df_with_quoted_shadow_path_refused(tmp_path, receiver, llm, personas):
    """`df -h /etc/sha''dow` is /etc/shadow once unquoted: the deny pattern sees that."""
    example_oncall(personas, llm)
    [answers], _ = await converse(tmp_path, receiver, ["run df -h /etc/sha''dow"])
    assert answers[0].startswith("I could not run that: Refused")


async def test_attack_path_outside_allowed_roots_refused(tmp_path, receiver, llm, personas):
    """`df -h /etc` names a path outside the persona's roots: refused, nothing runs."""
    example_oncall(personas, llm)
    [answers], _ = await converse(tmp_path, receiver, ["run df -h /etc", "run df -h ../../etc"])
    assert answers[0].startswith("I could not run that: Refused")
    assert "outside the allowed roots" in answers[0]
    assert answers[1].startswith("I could not run that: Refused")


def git_repo(path):
    path.mkdir()
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    identity = ["-c", "user.email=a@b.c", "-c", "user.name=A"]
    for argv in (
        ["git", "init", "-q"],
        ["git", *identity, "commit", "-q", "--allow-empty", "-m", "first"],
    ):
        subprocess.run(argv, cwd=path, check=True, env=env, capture_output=True)  # noqa: S603 - fixed argv
    return path


async def test_attack_git_log_output_file_refused(tmp_path, receiver, llm, personas):
    """An allow entry 'git log --oneline' is the whole command now, not a prefix for --output."""
    repo = git_repo(tmp_path / "repo")
    custom_oncall(personas, llm, {"allow": ["git log --oneline"], "cwd": str(repo)})
    [answers], _ = await converse(
        tmp_path, receiver, ["run git log --oneline --output=pwned.txt", "run git log --oneline"]
    )
    assert answers[0].startswith("I could not run that: Refused")
    assert not (repo / "pwned.txt").exists()
    assert answers[1].startswith("Here is what I saw:\nexit status 0")
    assert "first" in answers[1]


async def test_command_shapes_permit_listed_flags_and_values_only(
    tmp_path, receiver, llm, personas
):
    """A shape lists its flags and option values; anything else, in any order, is refused."""
    repo = git_repo(tmp_path / "repo")
    shape = {
        "argv": ["git", "log"],
        "flags": ["--oneline"],
        "options": {"-n": {"pattern": "[0-9]{1,3}"}},
    }
    custom_oncall(personas, llm, {"commands": [shape], "cwd": str(repo), "roots": [str(repo)]})
    [answers], audit = await converse(
        tmp_path,
        receiver,
        [
            "run git log -n 5 --oneline",
            "run git log --oneline --output=pwned.txt",
            "run git log -n 5x",
            "run git log --oneline --oneline",
            "run git log -- pwned.txt",
        ],
    )
    assert answers[0].startswith("Here is what I saw:\nexit status 0")
    assert all(a.startswith("I could not run that: Refused") for a in answers[1:]), answers
    assert not (repo / "pwned.txt").exists()
    refused = [e.detail["argv"] for e in audit if e.action == "tool.command.refused"]
    assert refused[0] == ["git", "log", "--oneline", "--output=pwned.txt"]


async def test_symlink_inside_a_root_to_outside_is_refused(tmp_path, receiver, llm, personas):
    """A path is judged where it really leads: a link in the root to /etc is outside."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "inside").mkdir()
    (root / "link").symlink_to("/etc")
    shape = {"argv": ["ls"], "args": {"max": 1, "path": True}}
    custom_oncall(personas, llm, {"commands": [shape], "roots": [str(root)], "cwd": str(root)})
    [answers], _ = await converse(
        tmp_path, receiver, [f"run ls {root}/inside", "run ls link", "run ls inside/../.."]
    )
    assert answers[0].startswith("Here is what I saw:\nexit status 0")
    assert "outside the allowed roots" in answers[1]
    assert "outside the allowed roots" in answers[2]


async def test_attack_concurrent_commands_capped_per_persona(tmp_path, receiver, llm, personas):
    """Five conversations ask for a slow command at once: three run (the default), two refused."""
    custom_oncall(personas, llm, {"allow": ["sleep 1.5"]})
    answers, audit = await converse(
        tmp_path,
        receiver,
        ["run sleep 1.5"],
        conversations=("a", "b", "c", "d", "e"),
    )
    texts = [a[0] for a in answers]
    ran = [t for t in texts if t.startswith("Here is what I saw:\nexit status 0")]
    busy = [t for t in texts if t.startswith("I could not run that: Refused") and "busy" in t]
    assert (len(ran), len(busy)) == (3, 2), texts
    assert len([e for e in audit if e.action == "tool.command.run"]) == 3
    assert len([e for e in audit if e.action == "tool.command.refused"]) == 2


async def test_every_run_and_refusal_is_audited_with_argv_and_caller(
    tmp_path, receiver, llm, personas
):
    """The audit stream holds the argv, the persona, the conversation and sender (as digests)."""
    example_oncall(personas, llm)
    [answers], audit = await converse(
        tmp_path, receiver, ["check the load please", "run cat /etc/shadow"]
    )
    assert answers[0].startswith("Here is what I saw:\nexit status 0")
    commands = [e for e in audit if e.action.startswith("tool.command.")]
    assert [e.action for e in commands] == [
        "tool.command.run",
        "tool.command.finished",
        "tool.command.refused",
    ]
    conversation = ConversationKey(tenant="acme", channel=Channel.HTTP, conversation_id="c1")
    for event in commands:
        assert event.actor == "persona:oncall"
        assert event.tenant == "acme"
        assert event.target == {"conversation": digest(conversation.key)}
        assert event.detail["sender"] == digest("user-1")
        assert event.detail["channel"] == "http"
    assert commands[0].detail["argv"] == ["uptime"]
    assert commands[1].status == 0
    assert commands[2].detail["argv"] == ["cat", "/etc/shadow"]
    assert commands[2].detail["reason"]
