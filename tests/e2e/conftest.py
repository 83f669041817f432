"""Fixtures for whole-path tests: a store URL per real store, a callback receiver, env secrets."""

import pytest

from connectors.http_api.emulator import CallbackReceiver

SECRETS = {
    "T_API_KEY": "test-api-key",
    "T_SIGN": "test-signing-secret",
    "T_SIGN_OLD": "test-signing-secret-old",
    "T_CALLBACK": "test-callback-secret",
}


@pytest.fixture(autouse=True)
def http_channel_env(monkeypatch):
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path):
    """The URL of a fresh store, once for each real implementation."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return request.getfixturevalue("redis_url")


@pytest.fixture
async def receiver():
    receiver = await CallbackReceiver(secrets=[SECRETS["T_CALLBACK"]]).start()
    yield receiver
    await receiver.stop()


def http_tenant(callback_url: str | None, tenant: str = "acme") -> dict:
    channel = {
        "kind": "http",
        "api_keys": ["env:T_API_KEY"],
        "signing_secrets": ["env:T_SIGN", "env:T_SIGN_OLD"],
    }
    if callback_url is not None:
        channel |= {"callback_url": callback_url, "callback_secrets": ["env:T_CALLBACK"]}
    return {"id": tenant, "name": "Acme", "channels": [channel]}
