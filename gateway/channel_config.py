"""What every channel block shares, and where each channel kind's connector lives.

The configuration (:mod:`gateway.config`) validates a channel block against the model its
connector declares (``config_model``). The connectors sit above the configuration (they read
it), so the configuration finds their models here, by module path: a connector is imported
on first use, and a deployment that uses only email never imports the Slack SDK. A kind
whose package is not installed is an unknown kind, never an import error.
"""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["CONNECTORS", "ChannelConfig", "channel_config_model", "load_connector"]

# Each channel kind's connector class, as ``module:Class``.
CONNECTORS: dict[str, str] = {
    "http": "connectors.http_api:HttpApiConnector",
    "slack": "connectors.slack:SlackConnector",
    "line": "connectors.line:LineConnector",
    "whatsapp": "connectors.whatsapp:WhatsAppConnector",
    "email": "connectors.email:EmailConnector",
}


class ChannelConfig(BaseModel):
    """Settings shared by every channel; connectors subclass it with their own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str
    id: str = ""  # distinguishes several channels of one kind in a tenant; defaults to kind
    api_base_url: str | None = None  # proxies, regional endpoints, the local emulators
    # Staff only (the tenant's own workspace): personas with host tools answer only here.
    internal: bool = False
    persona_switch: bool | None = None  # the switch command here; None: the tenant's setting

    @property
    def name(self) -> str:
        return self.id or self.kind

    def serves(self, reply_context: object) -> bool:
        """Whether a message with this reply context arrived through this block.

        Connectors whose tenants may hold several blocks of one kind override it (the Slack
        team, the LINE destination, the WhatsApp number); see gateway/reach.py.
        """
        return True


def load_connector(kind: str) -> Any:
    """The connector class of ``kind``, or None when the kind is unknown or not installed."""
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
    return getattr(module, attr)


def channel_config_model(kind: str) -> type[ChannelConfig] | None:
    """The model a ``kind`` block is validated against, or None for an unknown kind."""
    factory = load_connector(kind)
    if factory is None:
        return None
    model: type[ChannelConfig] = factory.config_model
    return model
