"""The SSRF guard: mapped and oddly spelled private addresses, on each URL kind it guards.

The address forms are judged directly; the URL kinds are attacked through the real paths:
a config carrying the URL, a real loopback receiver that must see nothing, and a name
(``localhost``) that passes the literal check but resolves to loopback at connect time.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import aiohttp
import pytest

from connectors.http_api.emulator import CallbackReceiver, HttpChannelClient
from gateway.config import parse_config
from gateway.deadletters import list_dead_letters
from gateway.errors import ConfigError
from gateway.metrics import Metrics
from gateway.netguard import guarded_session, refusal, refusal_reason, refused_by_guard
from gateway.quotas import QuotaPolicy
from gateway.store import Keyspace, open_store
from tests.harness import SECRETS, base_config, eventually, http_tenant, running_gateway

# (form, address, what it carries)
MAPPED_PRIVATE = [
    ("6to4", "2002:7f00:1::", "loopback"),
    ("6to4", "2002:a9fe:a9fe::1", "link-local"),
    ("6to4", "2002:c0a8:101::1", "private"),
    ("Teredo client", "2001:0:4136:e378:8000:63bf:80ff:fffe", "loopback"),
    ("Teredo client", "2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),
    ("NAT64", "64:ff9b::7f00:1", "loopback"),
    ("NAT64", "64:ff9b::a9fe:a9fe", "link-local"),
    ("NAT64", "64:ff9b::a00:1", "private"),
    ("NAT64", "64:ff9b:1::a9fe:a9fe", "link-local"),
    ("IPv4-compatible", "::7f00:1", "loopback"),
]
# Spellings getaddrinfo reads as 127.0.0.1 or 10.0.0.1 that ipaddress does not.
ODD_SPELLINGS = ["2130706433", "0177.0.0.1", "0x7f.0.0.1", "0x7f.1", "127.1", "012.0.0.1", "10"]


@pytest.fixture(autouse=True)
def _env(channel_env: None) -> None:
    """The test channels' secrets are in the environment."""


@pytest.mark.parametrize(("form", "address", "carried"), MAPPED_PRIVATE)
def test_attack_ipv6_mapping_of_a_private_ipv4_is_refused(
    form: str, address: str, carried: str
) -> None:
    """Each IPv6 form that carries a private/loopback/link-local IPv4 is refused, naming it."""
    reason = refusal_reason(ipaddress.ip_address(address))
    assert reason is not None
    assert reason.startswith(carried)
    assert form in reason


def test_ipv6_mappings_of_public_addresses_and_public_names_pass() -> None:
    """The guard judges what is carried: 6to4 of 8.8.8.8 and ordinary public hosts pass."""
    assert refusal_reason(ipaddress.ip_address("2002:808:808::1")) is None
    assert refusal("https://[2606:4700:4700::1111]/hook") is None
    assert refusal("https://hooks.example.com/flowbiz") is None


@pytest.mark.parametrize("host", ODD_SPELLINGS)
def test_attack_decimal_octal_and_hex_ipv4_spellings_are_refused(host: str) -> None:
    """``http://2130706433/`` is 127.0.0.1 to the resolver, so to the guard too."""
    assert refusal(f"http://{host}:8080/hook") is not None


# -- callback_url ------------------------------------------------------------------------------
def _callback_config(url: str, **channel: Any) -> dict[str, Any]:
    tenant = http_tenant(url)
    tenant["channels"][0].pop("callback_allow_private", None)
    tenant["channels"][0].update(channel)
    return base_config("memory://", tenants=[tenant])


@pytest.mark.parametrize(
    "host", ["[2002:7f00:1::]", "[64:ff9b::a9fe:a9fe]", "[::ffff:169.254.169.254]", "0x7f.1"]
)
def test_attack_private_callback_url_is_a_config_error(host: str) -> None:
    """A callback_url at a (mapped, oddly spelled) private address does not load…"""
    with pytest.raises(ConfigError, match="callback_url points at"):
        parse_config(_callback_config(f"http://{host}:8080/cb"))
    # …unless the operator says so for that URL.
    parse_config(_callback_config(f"http://{host}:8080/cb", callback_allow_private=True))


async def test_attack_callback_url_resolving_to_loopback_is_refused_at_connect(
    tmp_path: Any, receiver: CallbackReceiver
) -> None:
    """``localhost`` passes the literal check; the connection is refused, the reply is a
    dead letter (code ssrf), and the loopback receiver sees nothing."""
    url = receiver.url.replace("127.0.0.1", "localhost")
    data = _callback_config(url)
    data["store"]["url"] = f"sqlite:///{tmp_path}/g.db"
    async with running_gateway(data) as gw, aiohttp.ClientSession() as session:
        client = HttpChannelClient(
            session=session, base_url=gw.url, tenant="acme", api_key=SECRETS["T_API_KEY"]
        )
        await client.send(conversation_id="c1", text="hello")
        rt = gw.runtime
        assert rt.store is not None
        [(_, letter)] = await eventually(lambda: list_dead_letters(rt.store, rt.keyspace))
    assert letter.code == "ssrf"
    assert "loopback" in letter.reason
    assert receiver.received == []


# -- notify_url --------------------------------------------------------------------------------
def _notify_config(url: str, **tenant: Any) -> dict[str, Any]:
    data = base_config("memory://", tenants=[http_tenant(None)])
    data["tenants"][0] |= {"notify_url": url, "notify_secrets": ["env:T_NOTIFY"], **tenant}
    data["tenants"][0]["plan"] = "metered"
    data["plans"] = {"metered": {"monthly_outbound_messages": 2, "soft_limit_ratio": 0.5}}
    return data


@pytest.mark.parametrize("host", ["[2001:0:4136:e378:8000:63bf:80ff:fffe]", "2130706433"])
def test_attack_private_notify_url_is_a_config_error(host: str) -> None:
    """A notify_url at a Teredo-wrapped loopback or a decimal 127.0.0.1 does not load."""
    with pytest.raises(ConfigError, match="notify_url points at"):
        parse_config(_notify_config(f"http://{host}:8080/n"))
    parse_config(_notify_config(f"http://{host}:8080/n", notify_allow_private=True))


async def test_attack_notify_url_resolving_to_loopback_is_refused_at_connect(
    notify_receiver: CallbackReceiver,
) -> None:
    """The soft-limit warning to a name that resolves to loopback is refused and counted;
    the receiver sees nothing."""
    config = parse_config(_notify_config(notify_receiver.url.replace("127.0.0.1", "localhost")))
    store = await open_store("memory://")
    metrics = Metrics()
    async with aiohttp.ClientSession() as http:
        policy = QuotaPolicy(
            config=config, store=store, keyspace=Keyspace(), metrics=metrics, http=http
        )
        assert await policy.reserve_outbound("acme", 1)  # 50%: the warning goes out

        def refused() -> bool:
            return 'limit="notify",outcome="refused"' in metrics.render().decode()

        await eventually(refused)
        await policy.aclose()
    await store.aclose()
    assert notify_receiver.received == []


async def test_guarded_session_refuses_a_literal_loopback_at_the_socket(
    receiver: CallbackReceiver,
) -> None:
    """A literal address never reaches a resolver; the socket factory refuses it anyway."""
    async with guarded_session() as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.post(receiver.url, data=b"{}")
    assert "loopback" in str(refused_by_guard(caught.value))
    assert receiver.received == []
