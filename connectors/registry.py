"""Which connector package serves which channel kind, as the wiring sees it: typed specs.

Packages are imported lazily, so a deployment that uses only email never imports the Slack
SDK. The table of packages lives in :mod:`gateway.channel_config` (below the
configuration, which validates each channel block with its package's ``SPEC``); this module
reads the same ``SPEC`` as the full :class:`~connectors.spec.ConnectorSpec`.
"""

from __future__ import annotations

from typing import Any

from connectors.spec import ConnectorSpec
from gateway.channel_config import CONNECTOR_PACKAGES, connector_package

__all__ = ["CONNECTOR_PACKAGES", "connector_spec", "installed_specs"]


def connector_spec(kind: str) -> ConnectorSpec[Any] | None:
    """The spec of the package serving ``kind``; None when it is unknown or not installed."""
    package = connector_package(kind)
    if package is None:
        return None
    spec = package.SPEC
    if not isinstance(spec, ConnectorSpec) or spec.kind != kind:
        raise TypeError(f"{package.__name__}.SPEC is not the ConnectorSpec of {kind!r}")
    return spec


def installed_specs() -> list[ConnectorSpec[Any]]:
    """Every installed connector's spec, in the table's order (the demo plays them so)."""
    specs = (connector_spec(kind) for kind in CONNECTOR_PACKAGES)
    return [spec for spec in specs if spec is not None]
