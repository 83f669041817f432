"""Demo scene: a customer's mail thread with the gateway, replies through a local smarthost."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from typing import Any

from connectors.email.emulator import (
    MailSender,
    RelayedMail,
    Smarthost,
    dkim_dns_record,
    dkim_verify,
    generate_dkim_key,
)
from gateway.demo_scene import Transcript

__all__ = ["Scene"]

DKIM_ENV = "ACME_EMAIL_DKIM_KEY"
SUPPORT = "support@acme.example"
DOCS = "docs@acme.example"
JANE = "jane@customer.example"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Scene:
    title = "Email (SMTP in → gateway → DKIM-signed reply via smarthost)"

    def __init__(self) -> None:
        self.smarthost: Smarthost | None = None
        self.listener_port = 0

    async def prepare(self, config: dict[str, Any]) -> None:
        self.smarthost = await Smarthost().start()
        self.listener_port = _free_port()
        block: dict[str, Any] = {
            "kind": "email",
            "addresses": [{"address": SUPPORT}, {"address": DOCS, "persona": "docs"}],
            "listener": {"host": "127.0.0.1", "port": self.listener_port},
            "outbound": {"security": "none"},
            "api_base_url": f"smtp://127.0.0.1:{self.smarthost.port}",
        }
        if os.environ.get(DKIM_ENV) or shutil.which("openssl"):
            os.environ.setdefault(DKIM_ENV, generate_dkim_key().decode())  # demo-only key
            block["dkim"] = {
                "selector": "demo",
                "domain": "acme.example",
                "private_key": f"env:{DKIM_ENV}",
            }
        for tenant in config["tenants"]:
            if tenant["id"] == "acme":
                tenant.setdefault("channels", []).append(block)

    def _show(self, transcript: Transcript, mail: RelayedMail) -> bool:
        key = os.environ.get(DKIM_ENV)
        signed = key is not None and dkim_verify(
            mail.data, dns_record=dkim_dns_record(key.encode())
        )
        message = mail.message
        transcript.bot(
            str(message["From"]),
            mail.text().rstrip(),
            note=f"{message['Subject']}; In-Reply-To {message['In-Reply-To']}; "
            f"DKIM {'verified' if signed else 'not signed'}",
        )
        return signed or key is None

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        assert self.smarthost is not None
        sender = MailSender("127.0.0.1", self.listener_port)
        ok = True
        first = sender.compose(
            from_addr=JANE, from_name="Jane Doe", to=SUPPORT, subject="Hello", text="hello there"
        )
        transcript.customer("Jane (email)", "hello there")
        code, _ = await sender.send(first)
        try:
            [reply] = await self.smarthost.wait_for(1)
        except TimeoutError:
            transcript.note(f"SMTP {code}; no reply arrived")
            return False
        ok = self._show(transcript, reply) and ok
        follow_up = sender.reply_to(
            reply.message, from_addr=JANE, from_name="Jane Doe", text="what are your prices?"
        )
        transcript.customer("Jane (email)", "what are your prices?  [a reply in the thread]")
        await sender.send(follow_up)
        try:
            second = (await self.smarthost.wait_for(2))[1]
        except TimeoutError:
            transcript.note("no reply arrived")
            return False
        ok = self._show(transcript, second) and ok
        ooo = sender.reply_to(
            second.message, from_addr=JANE, from_name="Jane Doe", text="I am out of office."
        )
        ooo["Auto-Submitted"] = "auto-replied"
        transcript.customer("Jane (email)", "I am out of office.  [Auto-Submitted: auto-replied]")
        await sender.send(ooo)
        docs = sender.compose(
            from_addr=JANE, from_name="Jane Doe", to=DOCS, subject="Setup", text="how do I install?"
        )
        transcript.customer("Jane → docs@", "how do I install?")
        await sender.send(docs)
        try:
            third = (await self.smarthost.wait_for(3))[2]
        except TimeoutError:
            transcript.note("no reply arrived")
            return False
        ok = self._show(transcript, third) and ok
        await asyncio.sleep(0.5)  # the out-of-office mail is in another conversation: let it land
        answered_ooo = any("out of office" in m.text() for m in self.smarthost.received)
        transcript.note("the out-of-office auto-reply got no answer (RFC 3834 loop protection)")
        return ok and len(self.smarthost.received) == 3 and not answered_ooo

    async def close(self) -> None:
        if self.smarthost is not None:
            await self.smarthost.stop()
