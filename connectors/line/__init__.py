"""LINE Official Account channel (Messaging API webhooks, reply and push)."""

from connectors.line.connector import LineChannelConfig, LineConnector

__all__ = ["LineChannelConfig", "LineConnector"]
