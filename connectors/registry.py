"""Which connector serves which channel kind.

Connectors are imported lazily, so a deployment that uses only email never imports the
Slack SDK. Each entry names ``module:Class``; the class carries ``config_model``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from connectors.base import ConnectorFactory
    from gateway.config import ChannelConfig

__all__ = ["CONNECTORS", "channel_config_model", "connector_class"]

CONNECTORS: dict[str, str] = {
    "http": "connectors.http_api:HttpApiConnector",
    "slack": "connectors.slack:SlackConnector",
    "line": "connectors.line:LineConnector",
    "whatsapp": "connectors.whatsapp:WhatsAppConnector",
    "email": "connectors.email:EmailConnector",
}


def connector_class(kind: str) -> ConnectorFactory | None:
    target = CONNECTORS.get(kind)
    if target is None:
        return None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None  # this connector is not part of this installation
        raise
    factory: ConnectorFactory = getattr(module, attr)
    return factory


def channel_config_model(kind: str) -> type[ChannelConfig] | None:
    factory = connector_class(kind)
    return None if factory is None else factory.config_model
