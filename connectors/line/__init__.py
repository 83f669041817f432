"""LINE Official Account channel (Messaging API webhooks, reply and push)."""

from connectors.line.config import LineChannelConfig
from connectors.line.spec import SPEC

__all__ = ["SPEC", "LineChannelConfig", "LineConnector"]


def __getattr__(name: str) -> object:
    # The connector (and the platform SDK under it) is loaded only when asked for.
    if name == "LineConnector":
        from connectors.line.connector import LineConnector

        return LineConnector
    raise AttributeError(name)
