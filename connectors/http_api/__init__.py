"""The HTTP API channel: websites and apps talk to personas over signed HTTP.

The reference connector: the others follow the same shape.
"""

from connectors.http_api.connector import HttpApiConnector, HttpChannelConfig
from connectors.http_api.spec import SPEC

__all__ = ["SPEC", "HttpApiConnector", "HttpChannelConfig"]
