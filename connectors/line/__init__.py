"""LINE Official Account channel (Messaging API webhooks, reply and push)."""

from connectors.line.connector import LineChannelConfig, LineConnector
from connectors.line.spec import SPEC

__all__ = ["SPEC", "LineChannelConfig", "LineConnector"]
