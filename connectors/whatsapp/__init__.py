"""WhatsApp through Twilio: signed webhooks (also behind proxies), the 24-hour window and
templates, split replies, delivery receipts from status callbacks."""

from connectors.whatsapp.connector import (
    WhatsAppChannelConfig,
    WhatsAppConnector,
    WhatsAppTemplate,
)
from connectors.whatsapp.spec import SPEC

__all__ = ["SPEC", "WhatsAppChannelConfig", "WhatsAppConnector", "WhatsAppTemplate"]
