"""Which connector serves which channel kind.

Connectors are imported lazily, so a deployment that uses only email never imports the
Slack SDK. The table of ``module:Class`` entries lives in :mod:`gateway.channel_config`
(below the configuration, which validates each channel block with the class's
``config_model``); this module gives the wiring the classes, typed.
"""

from __future__ import annotations

from connectors.base import ConnectorFactory
from gateway.channel_config import CONNECTORS, channel_config_model, load_connector

__all__ = ["CONNECTORS", "channel_config_model", "connector_class"]


def connector_class(kind: str) -> ConnectorFactory | None:
    factory: ConnectorFactory | None = load_connector(kind)
    return factory
