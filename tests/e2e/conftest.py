"""Every whole-path test runs with the test channels' secrets in the environment."""

import pytest

from tests.harness import SECRETS, http_tenant

__all__ = ["SECRETS", "http_tenant"]


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """Applies the suite's ``channel_env`` to every test in this folder."""
