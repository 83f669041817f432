"""WhatsApp through Twilio: signed webhooks (also behind proxies), the 24-hour window and
templates, split replies, delivery receipts from status callbacks."""

from connectors.whatsapp.config import WhatsAppChannelConfig, WhatsAppTemplate
from connectors.whatsapp.spec import SPEC

__all__ = ["SPEC", "WhatsAppChannelConfig", "WhatsAppConnector", "WhatsAppTemplate"]


def __getattr__(name: str) -> object:
    # The connector (and the platform SDK under it) is loaded only when asked for.
    if name == "WhatsAppConnector":
        from connectors.whatsapp.connector import WhatsAppConnector

        return WhatsAppConnector
    raise AttributeError(name)
