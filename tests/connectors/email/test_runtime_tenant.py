"""A tenant added at run time on the SMTP listener another tenant already uses: the email
connector is rebuilt on the same port (the old one let go of it first) and serves both."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from connectors.email.emulator import MailSender, Smarthost
from gateway.admin.keys import Role, create_key
from tests.conftest import free_port
from tests.connectors.email.conftest import SUPPORT, email_block
from tests.harness import base_config, running_gateway

HELP = "help@acme.example"
JANE = "jane@customer.example"


async def test_a_tenant_joins_a_bound_smtp_listener_without_a_restart(
    tmp_path: Path, smarthost: Smarthost, dkim_env: None
) -> None:
    listener = {"host": "127.0.0.1", "port": free_port(), "max_message_bytes": 512 * 1024}
    acme = email_block(smarthost, listener=listener)
    data = base_config(f"sqlite:///{tmp_path}/gw.db", tenants=[{"id": "acme", "channels": [acme]}])
    sender = MailSender("127.0.0.1", listener["port"])
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        rt = gw.runtime
        assert rt.store is not None
        _, token = await create_key(rt.store, rt.keyspace, name="admin", role=Role.ADMIN)
        globex = email_block(smarthost, listener=listener, addresses=[{"address": HELP}])
        async with session.put(
            gw.ops_url + "/v1/tenants/globex",
            json={"channels": [globex]},
            headers={"Authorization": f"Bearer {token}"},
        ) as response:
            assert response.status == 200, await response.text()

        for to in (HELP, SUPPORT):
            code, _ = await sender.send(
                sender.compose(from_addr=JANE, from_name="Jane", to=to, subject="hi", text="hello")
            )
            assert code == 250, to
        relayed = await smarthost.wait_for(2)
        assert {mail.mail_from for mail in relayed} == {HELP, SUPPORT}
        assert rt.config.tenant("globex") is not None
