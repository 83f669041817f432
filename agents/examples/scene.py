"""A ``flowbiz demo`` scene for the example personas: FAQ bot, docs assistant, on-call helper.

``prepare`` starts the example FAQ bot and the OpenAI emulator (answering through the
scripted responders), and points the demo at a personas folder holding the configured
personas plus the examples, rewired to those local servers. ``play`` talks to each example
persona over the HTTP API channel (``/persona <name> …``) and reads the replies by long-poll,
so it does not depend on whichever callback receiver another scene installed. The on-call
helper is internal-only: a customer on the public channel is told there is no such persona,
the operations tenant's internal channel reaches it (``prepare`` adds that tenant when the
config has none).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from agents.emulators.openai import OpenAIEmulator, ScriptedReply
from agents.examples import PERSONAS_DIR
from agents.examples.faq_bot import FaqBot
from agents.examples.responders import docs_responder, oncall_responder
from connectors.http_api.emulator import HttpChannelClient
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

DEMO_ENV = {
    "FAQ_BOT_SECRET": "demo-faq-bot-secret",
    "DOCS_ASSISTANT_API_KEY": "demo-llm-key",
    "ONCALL_API_KEY": "demo-llm-key",
}

_OPS = "ops"  # the conversations below held on the operations tenant's internal channel
_CONVERSATIONS = [
    ("ex-dana", "Dana", "/persona faq what are your opening hours?"),
    ("ex-erin", "Erin", "/persona docs-assistant how do I verify a webhook signature?"),
    ("ex-finn", "Finn", "/persona oncall check the load"),
    ("ops-olivia", "Olivia", "/persona oncall check the load"),
    ("ops-olivia", "Olivia", "run rm -rf /"),
]


def _responder(request: dict[str, Any]) -> ScriptedReply:
    offered = {t["function"]["name"] for t in request.get("tools", [])}
    return docs_responder(request) if "search_docs" in offered else oncall_responder(request)


class Scene:
    title = "Example agents (webhook bot, LLM with docs search, guarded on-call commands)"

    def __init__(
        self,
        *,
        personas_base: Path | None = None,
        tenant: str = "acme",
        ops_tenant: str = "acme-ops",
    ) -> None:
        self.personas_base = personas_base  # what a relative personas_dir is relative to
        self.tenant = tenant
        self.ops_tenant = ops_tenant
        self.api_key_env = "ACME_HTTP_API_KEY"
        self._bot_runner: web.AppRunner | None = None
        self._llm: OpenAIEmulator | None = None
        self._folder: Path | None = None

    async def prepare(self, config: dict[str, Any]) -> None:
        for name, value in DEMO_ENV.items():
            os.environ.setdefault(name, value)
        bot = FaqBot([os.environ["FAQ_BOT_SECRET"]])
        self._bot_runner = web.AppRunner(bot.app(), access_log=None)
        await self._bot_runner.setup()
        await web.TCPSite(self._bot_runner, "127.0.0.1", 0).start()
        bot_url = f"http://127.0.0.1:{self._bot_runner.addresses[0][1]}/bot"
        self._llm = await OpenAIEmulator(
            api_key=os.environ["DOCS_ASSISTANT_API_KEY"], responder=_responder
        ).start()

        self._folder = Path(tempfile.mkdtemp(prefix="flowbiz-example-personas-"))
        current = Path(str(config.get("personas_dir", "agents/personas")))
        if not current.is_absolute() and self.personas_base is not None:
            current = self.personas_base / current
        for file in sorted(current.glob("*.yaml")):
            shutil.copy(file, self._folder / file.name)
        for file in sorted(PERSONAS_DIR.glob("*.yaml")):
            data = yaml.safe_load(file.read_text(encoding="utf-8"))
            options = data["agent"]["options"]
            if data["agent"]["kind"] == "webhook":
                options["url"] = bot_url
            else:
                options["base_url"] = self._llm.base_url
            if "knowledge_dir" in data:
                data["knowledge_dir"] = str((PERSONAS_DIR / data["knowledge_dir"]).resolve())
            (self._folder / file.name).write_text(yaml.safe_dump(data), encoding="utf-8")
        config["personas_dir"] = str(self._folder)
        self._add_ops_tenant(config)

    def _add_ops_tenant(self, config: dict[str, Any]) -> None:
        """The operations tenant with an internal HTTP channel, unless the config has one."""
        tenants: list[dict[str, Any]] = config.setdefault("tenants", [])
        if any(t.get("id") == self.ops_tenant for t in tenants):
            return
        public = next(t for t in tenants if t.get("id") == self.tenant)
        block = next(c for c in public["channels"] if c["kind"] == "http")
        internal = {k: v for k, v in block.items() if not k.startswith("callback")}
        tenants.append({"id": self.ops_tenant, "channels": [{**internal, "internal": True}]})

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        async with aiohttp.ClientSession() as session:
            clients = {
                tenant: HttpChannelClient(
                    session=session,
                    base_url=gateway_url,
                    tenant=tenant,
                    api_key=os.environ[self.api_key_env],
                )
                for tenant in (self.tenant, self.ops_tenant)
            }
            cursors: dict[str, str | None] = {}
            # Conversations of this run only: a demo run again on its kept store must not
            # read the earlier run's replies as this one's.
            run = f"{os.getpid()}-{int(time.time())}"
            for n, (name, user, text) in enumerate(_CONVERSATIONS):
                conversation = f"{name}-{run}"
                ops = conversation.startswith(_OPS)
                client = clients[self.ops_tenant if ops else self.tenant]
                transcript.customer(f"{user} ({'ops' if ops else 'web'})", text)
                await client.send(
                    conversation_id=conversation,
                    text=text,
                    user_id=user.lower(),
                    user_name=user,
                    event_id=f"example-{os.getpid()}-{n}",
                )
                result = await client.replies(
                    conversation_id=conversation, after=cursors.get(conversation), wait=15
                )
                if not result["replies"]:
                    transcript.note("no reply arrived")
                    return False
                cursors[conversation] = result["next"]
                for reply in result["replies"]:
                    transcript.bot(reply["persona"]["display_name"], reply["text"])
        return True

    async def close(self) -> None:
        if self._bot_runner is not None:
            await self._bot_runner.cleanup()
        if self._llm is not None:
            await self._llm.stop()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
