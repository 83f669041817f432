"""The email channel: SMTP listener and IMAP in, DKIM-signed SMTP replies out.

Inside this package ``email`` always means the standard library (absolute imports), never
this package, which is ``connectors.email``.
"""

from connectors.email.config import EmailChannelConfig
from connectors.email.spec import SPEC

__all__ = ["SPEC", "EmailChannelConfig", "EmailConnector"]


def __getattr__(name: str) -> object:
    # The connector (and the platform SDK under it) is loaded only when asked for.
    if name == "EmailConnector":
        from connectors.email.connector import EmailConnector

        return EmailConnector
    raise AttributeError(name)
