"""FlowBiz Gateway: one async service between chat platforms and bots.

The public surface: the app factory, the configuration loader, the message model and the
exception tree. Everything else is importable from its module but may change.
"""

from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from gateway.app import create_app

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


def __getattr__(name: str) -> Any:
    # The app imports every connector and agent, which import the models from here: load
    # it on first use so `import connectors.x` works before `import gateway`.
    if name == "create_app":
        from gateway.app import create_app

        return create_app
    raise AttributeError(f"module 'gateway' has no attribute {name!r}")
