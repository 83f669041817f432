"""Every test here runs with the test channels' secrets in the environment."""

import pytest


@pytest.fixture(autouse=True)
def _channel_env(channel_env: None) -> None:
    """Applies the suite's ``channel_env`` to every test in this folder."""
