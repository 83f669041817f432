"""FlowBiz Gateway: one async service between chat platforms and bots.

The public surface: the app factory, the configuration loader, the message model and the
exception tree. Everything else is importable from its module but may change.
"""

from gateway.app import create_app
from gateway.config import GatewayConfig, load_config
from gateway.errors import (
    ConfigError,
    DeliveryError,
    GatewayError,
    InboundError,
    PermanentDeliveryError,
    StoreError,
    TransientDeliveryError,
    VerificationError,
)
from gateway.models import (
    Channel,
    ConversationKey,
    DeliveryReceipt,
    InboundMessage,
    OutboundMessage,
)

__all__ = [
    "Channel",
    "ConfigError",
    "ConversationKey",
    "DeliveryError",
    "DeliveryReceipt",
    "GatewayConfig",
    "GatewayError",
    "InboundError",
    "InboundMessage",
    "OutboundMessage",
    "PermanentDeliveryError",
    "StoreError",
    "TransientDeliveryError",
    "VerificationError",
    "create_app",
    "load_config",
]
