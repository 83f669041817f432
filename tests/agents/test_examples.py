"""The example personas answer through the real gateway: FAQ bot, docs assistant, on-call helper."""

import aiohttp
import pytest
import yaml

from agents.emulators.openai import OpenAIEmulator
from agents.examples import EXAMPLES_DIR, PERSONAS_DIR
from agents.examples.responders import docs_responder, oncall_responder
from connectors.http_api.emulator import HttpChannelClient
from tests.agents.conftest import BOT_SECRET_OLD
from tests.e2e.conftest import SECRETS, http_tenant
from tests.harness import base_config, eventually, running_gateway

LLM_KEY = "sk-example-test"


@pytest.fixture(autouse=True)
def example_env(monkeypatch):
    monkeypatch.setenv("FAQ_BOT_SECRET", BOT_SECRET_OLD)
    monkeypatch.setenv("DOCS_ASSISTANT_API_KEY", LLM_KEY)
    monkeypatch.setenv("ONCALL_API_KEY", LLM_KEY)


def install(folder, name, **options):
    """Copy an example persona into ``folder``, pointing it at the test's local servers."""
    data = yaml.safe_load((PERSONAS_DIR / f"{name}.yaml").read_text())
    data["agent"]["options"].update(options)
    if "knowledge_dir" in data:
        data["knowledge_dir"] = str((PERSONAS_DIR / data["knowledge_dir"]).resolve())
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(data))


@pytest.fixture
async def llm():
    emulator = await OpenAIEmulator(api_key=LLM_KEY).start()
    yield emulator
    await emulator.stop()


def _replies(receiver, count):
    """The replies on conversation c1 once there are ``count`` of them, else None."""
    mine = [c.payload for c in receiver.unique() if c.payload["conversation_id"] == "c1"]
    return mine if len(mine) >= count else None


async def converse(tmp_path, receiver, persona, messages, *, internal=False, **extra):
    tenant = http_tenant(receiver.url)
    tenant["channels"][0]["internal"] = internal
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[tenant], **extra)
    data["personas_dir"] = str(tmp_path / "personas")
    data["routing"] = {"default_persona": persona}
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        web = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        answers: list[dict] = []
        for n, text in enumerate(messages):
            await web.send(conversation_id="c1", text=text, user_name="Alice", event_id=f"e{n}")
            answers = await eventually(lambda count=n + 1: _replies(receiver, count))
        return answers, receiver.unique()


async def test_faq_bot_answers_over_a_signed_webhook_and_can_hand_off(tmp_path, receiver, faq_bot):
    """The FAQ persona reaches the example bot; 'human' hands the conversation to operators."""
    (tmp_path / "personas").mkdir()
    install(tmp_path / "personas", "faq", url=faq_bot.url)
    answers, _ = await converse(
        tmp_path,
        receiver,
        "faq",
        ["what are your opening hours?", "can I talk to a human?"],
        handoff={"operators": {"tenant": "acme", "channel": "http", "conversation_id": "ops"}},
    )
    assert answers[0]["text"] == "We are open Monday to Friday, 9:00 to 18:00."
    assert answers[0]["persona"]["display_name"] == "FAQ Bot"
    assert answers[1]["text"] == "Let me get a colleague for you."
    await eventually(lambda: any(c.payload["conversation_id"] == "ops" for c in receiver.unique()))
    assert faq_bot.bot.rejected == 0


async def test_docs_assistant_searches_the_knowledge_folder(tmp_path, receiver, llm):
    """The docs assistant calls search_docs and answers from webhooks.md, citing it."""
    llm.responder = docs_responder
    (tmp_path / "personas").mkdir()
    install(tmp_path / "personas", "docs-assistant", base_url=llm.base_url)
    answers, _ = await converse(
        tmp_path, receiver, "docs-assistant", ["how do I check a webhook signature?"]
    )
    assert answers[0]["text"].endswith("[webhooks.md]")
    assert "X-FlowBiz-Signature" in answers[0]["text"]
    first = llm.requests[0]
    assert [t["function"]["name"] for t in first["tools"]] == ["search_docs", "handoff"]
    assert "Docs Assistant for Acme" in first["messages"][0]["content"]
    assert first["temperature"] == 0


async def test_oncall_helper_runs_only_allowlisted_diagnostics(tmp_path, receiver, llm):
    """'check the load' runs uptime; 'run rm -rf /' and 'run cat /etc/shadow' are refused."""
    llm.responder = oncall_responder
    (tmp_path / "personas").mkdir()
    install(tmp_path / "personas", "oncall", base_url=llm.base_url)
    answers, _ = await converse(
        tmp_path,
        receiver,
        "oncall",
        ["check the load please", "run rm -rf /", "run cat /etc/shadow", "run echo hi"],
        internal=True,  # the on-call persona answers only on internal channels
    )
    assert answers[0]["text"].startswith("Here is what I saw:\nexit status 0")
    assert "load average" in answers[0]["text"]
    assert answers[1]["text"].startswith("I could not run that: Refused")
    assert answers[2]["text"].startswith("I could not run that: Refused")
    assert answers[3]["text"] == "Here is what I saw:\nexit status 0\nhi"


def test_example_personas_load_and_build():
    """All example personas load from their folder and build their agents and tools."""
    import gateway  # noqa: F401 - core first (see tests/agents/conftest.py)
    from agents.persona import load_personas
    from agents.registry import build_agent

    personas = load_personas(PERSONAS_DIR)
    assert set(personas) == {"faq", "docs-assistant", "oncall"}
    assert personas["docs-assistant"].knowledge_dir.resolve() == EXAMPLES_DIR / "knowledge" / "docs"
    for persona in personas.values():
        build_agent(persona)


async def test_demo_scene_plays_every_example_through_the_gateway(tmp_path, monkeypatch):
    """The examples' demo scene gets a reply from each example persona over the HTTP channel."""
    import io

    from agents.examples.scene import Scene
    from gateway.demo import Transcript
    from tests.harness import PERSONAS_DIR as CORE_PERSONAS

    monkeypatch.setenv("ACME_HTTP_API_KEY", SECRETS["T_API_KEY"])
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[http_tenant(None)])
    scene = Scene()
    out = io.StringIO()
    try:
        await scene.prepare(data)
        async with running_gateway(data) as gw:
            assert {"core", "faq", "docs-assistant", "oncall"} <= set(gw.runtime.personas)
            assert str(CORE_PERSONAS) != data["personas_dir"]
            assert await scene.play(gw.url, Transcript(out))
    finally:
        await scene.close()
    transcript = out.getvalue()
    assert "We are open Monday to Friday" in transcript
    assert "[webhooks.md]" in transcript
    assert "load average" in transcript
    assert "Refused" in transcript
    # A customer on the public channel is not told the on-call persona exists.
    assert "There is no such persona here. You can switch to: core, docs," in transcript
