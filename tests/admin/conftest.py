"""Fixtures for admin API tests: channel secrets in the environment, a webhook receiver, stores."""

import pytest

from connectors.http_api.emulator import CallbackReceiver
from tests.e2e.conftest import SECRETS

NOTIFY_SECRET = "test-notify-secret"


@pytest.fixture(autouse=True)
def channel_env(monkeypatch):
    for name, value in {**SECRETS, "T_NOTIFY": NOTIFY_SECRET}.items():
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


@pytest.fixture
async def notify_receiver():
    """Receives the tenant's quota warnings; accepts only ones signed with T_NOTIFY."""
    receiver = await CallbackReceiver(secrets=[NOTIFY_SECRET]).start()
    yield receiver
    await receiver.stop()
