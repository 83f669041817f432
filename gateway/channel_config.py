"""What every channel block shares, and where each channel kind's connector package lives.

The configuration (:mod:`gateway.config`) validates a channel block against the model its
connector package declares in its ``SPEC`` (:class:`connectors.spec.ConnectorSpec`). The
connectors sit above the configuration (they read it), so the configuration finds their
packages here, by module path: a package is imported on first use, and a deployment that
uses only email never imports the Slack SDK. A kind whose package is not installed is an
unknown kind, never an import error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CONNECTOR_PACKAGES",
    "ChannelConfig",
    "PlacedChannel",
    "connector_package",
    "given_in_schema",
]

# Each channel kind's connector package; the package exports ``SPEC`` (connectors/spec.py).
CONNECTOR_PACKAGES: dict[str, str] = {
    "http": "connectors.http_api",
    "slack": "connectors.slack",
    "line": "connectors.line",
    "whatsapp": "connectors.whatsapp",
    "email": "connectors.email",
}


class ChannelConfig(BaseModel):
    """Settings shared by every channel; connectors subclass it with their own fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: str = Field(description="The channel kind; it chooses the block's other keys.")
    id: str = Field(
        default="",
        description="Tells several blocks of one kind in a tenant apart; defaults to the kind.",
    )
    api_base_url: str | None = Field(
        default=None,
        description="The platform API's base URL: proxies, regional endpoints, the local "
        "emulators.",
    )
    internal: bool = Field(
        default=False,
        description="Staff only (the tenant's own workspace): personas with host tools answer "
        "only on internal channels.",
    )
    persona_switch: bool | None = Field(
        default=None,
        description="Whether the switch command works here; null: the tenant's setting.",
    )

    @property
    def name(self) -> str:
        return self.id or self.kind

    def serves(self, reply_context: object) -> bool:
        """Whether a message with this reply context arrived through this block.

        Connectors whose tenants may hold several blocks of one kind override it (the Slack
        team, the LINE destination, the WhatsApp number); see gateway/reach.py.
        """
        return True


ChannelT = TypeVar("ChannelT", bound=ChannelConfig, covariant=True)


@dataclass(frozen=True, slots=True)
class PlacedChannel(Generic[ChannelT]):
    """A validated channel block and where it sits in the file, for a connector's check."""

    tenant: str  # the tenant's id
    channel: ChannelT
    where: str  # its path, as every configuration problem names one: "tenants.0.channels.1"

    @property
    def label(self) -> str:
        return f"{self.where} (tenant {self.tenant!r}, channel {self.channel.name!r})"


def connector_package(kind: str) -> ModuleType | None:
    """The connector package of ``kind``, or None when the kind is unknown or not installed."""
    module_name = CONNECTOR_PACKAGES.get(kind)
    if module_name is None:
        return None
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            return None  # this connector is not part of this installation
        raise


def given_in_schema(key: str, json_type: str = "string") -> dict[str, Any]:
    """A JSON Schema clause: ``key`` is written and holds a value (a list: a non-empty one).

    Connectors state with it, in their model's ``json_schema_extra``, which keys their own
    check requires together ("team_id or enterprise_id"), so the published schema refuses
    what the loader refuses.
    """
    value: dict[str, Any] = {"type": json_type}
    if json_type == "array":
        value["minItems"] = 1
    return {"required": [key], "properties": {key: value}}
