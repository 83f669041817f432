"""Logs at INFO carry no phone number or email address: conversations appear as a stable hash.

A WhatsApp message (Twilio emulator) and an email (real SMTP into the gateway's aiosmtpd
listener, reply through a real smarthost) go through a served gateway while every logger,
the SDKs' and aiosmtpd's included, writes to the gateway's JSON handler at INFO.
"""

import io
import json
import logging

import aiohttp
import pytest

from connectors.email.connector import EmailConnector
from connectors.email.emulator import MailSender, Smarthost
from connectors.whatsapp.emulator import TwilioEmulator, TwilioWebhookSender
from gateway.models import Channel, ConversationKey
from gateway.observability import configure_logging, conversation_ref
from tests.harness import base_config, running_gateway

ACCOUNT_SID = "AC" + "d4" * 16
AUTH_TOKEN = "wa-log-test-auth-token"
BUSINESS = "whatsapp:+14155238886"
PHONE = "+14155550177"
SUPPORT = "support@acme.example"
CUSTOMER_EMAIL = "jane.private@customer.example"
QUIETED = ("mail.log", "twilio.http_client", "twilio.async_http_client")


@pytest.fixture
def info_logs():
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quieted = {name: logging.getLogger(name).level for name in QUIETED}
    stream = io.StringIO()
    configure_logging("info", stream=stream)
    yield stream
    root.handlers[:], level = saved
    root.setLevel(level)
    for name, old in quieted.items():
        logging.getLogger(name).setLevel(old)


@pytest.fixture
async def twilio():
    emulator = await TwilioEmulator(accounts={ACCOUNT_SID: AUTH_TOKEN}).start()
    yield emulator
    await emulator.stop()


@pytest.fixture
async def smarthost():
    host = await Smarthost().start()
    yield host
    await host.stop()


def gateway_config(tmp_path, twilio, smarthost):
    whatsapp = {
        "kind": "whatsapp",
        "account_sid": ACCOUNT_SID,
        "auth_token": "env:WA_LOG_AUTH_TOKEN",
        "from_number": BUSINESS,
        "public_base_url": "https://wa.example.test",
        "api_base_url": twilio.url,
    }
    email = {
        "kind": "email",
        "addresses": [{"address": SUPPORT}],
        "listener": {"host": "127.0.0.1", "port": 0},
        "outbound": {"host": "127.0.0.1", "port": smarthost.port, "security": "none"},
    }
    return base_config(
        f"sqlite:///{tmp_path}/gw.db",
        tenants=[{"id": "acme", "channels": [whatsapp, email]}],
    )


async def test_attack_phone_numbers_and_addresses_stay_out_of_info_logs(
    tmp_path, twilio, smarthost, info_logs, monkeypatch
):
    monkeypatch.setenv("WA_LOG_AUTH_TOKEN", AUTH_TOKEN)
    async with (
        running_gateway(gateway_config(tmp_path, twilio, smarthost)) as gw,
        aiohttp.ClientSession() as http,
    ):
        sender = TwilioWebhookSender(
            session=http,
            gateway_url=gw.url,
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            public_url="https://wa.example.test",
        )
        for n in range(2):
            status, _ = await sender.send(from_=f"whatsapp:{PHONE}", to=BUSINESS, body=f"hi {n}")
            assert status == 200
        await twilio.wait_for(2)

        connector = gw.runtime.connectors[Channel.EMAIL]
        assert isinstance(connector, EmailConnector)
        mail = MailSender(*connector.listener_address("acme"))
        message = mail.compose(
            from_addr=CUSTOMER_EMAIL, from_name="Jane", to=SUPPORT, subject="hello", text="hi"
        )
        code, _ = await mail.send(message)
        assert code == 250
        await smarthost.wait_for(1)

    text = info_logs.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert {"worker.turn_committed", "dispatch.delivered"} <= {line["event"] for line in lines}
    assert PHONE.removeprefix("+") not in text
    assert CUSTOMER_EMAIL not in text
    assert "jane.private" not in text

    whatsapp = ConversationKey(
        tenant="acme", channel=Channel.WHATSAPP, conversation_id=f"whatsapp:{PHONE}"
    )
    turns = [line for line in lines if line["event"] == "worker.turn_committed"]
    by_channel = {line["channel"]: line["conversation"] for line in turns}
    # Two messages of one conversation: the same reference both times, and a short one.
    assert [t["conversation"] for t in turns if t["channel"] == "whatsapp"] == [
        conversation_ref(whatsapp.key)
    ] * 2
    assert len(by_channel["whatsapp"]) <= 16
    assert by_channel["email"] != by_channel["whatsapp"]
    assert conversation_ref(whatsapp.key) == conversation_ref(whatsapp.key)


def test_debug_lines_keep_the_full_conversation_key():
    """At DEBUG the full key is written next to the reference, so an operator can map them."""
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        configure_logging("debug", stream=stream)
        from gateway.observability import bind, get_logger

        log = get_logger("tests.personal_data")
        with bind(conversation="acme:whatsapp:whatsapp%3A%2B14155550177"):
            log.debug("probe.debug")
            log.info("probe.info")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    debug, info = (json.loads(line) for line in stream.getvalue().splitlines())
    ref = conversation_ref("acme:whatsapp:whatsapp%3A%2B14155550177")
    assert debug["conversation"] == info["conversation"] == ref
    assert debug["conversation_full"] == "acme:whatsapp:whatsapp%3A%2B14155550177"
    assert "conversation_full" not in info


def test_reference_is_keyed_by_the_configured_secret(monkeypatch):
    """With FLOWBIZ_LOG_HASH_KEY set, references cannot be recomputed from a list of numbers."""
    key = "acme/whatsapp/whatsapp%3A%2B14155550177"
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {name: logging.getLogger(name).level for name in QUIETED}
    try:
        configure_logging("info", stream=io.StringIO())
        plain = conversation_ref(key)
        monkeypatch.setenv("FLOWBIZ_LOG_HASH_KEY", "k" * 100)
        configure_logging("info", stream=io.StringIO())
        keyed = conversation_ref(key)
        assert keyed == conversation_ref(key) != plain
        assert keyed.startswith("c-")
        assert len(keyed) == 14
    finally:
        monkeypatch.delenv("FLOWBIZ_LOG_HASH_KEY")
        configure_logging("info", stream=io.StringIO())
        root.handlers[:], level = saved
        root.setLevel(level)
        for name, old in levels.items():
            logging.getLogger(name).setLevel(old)
