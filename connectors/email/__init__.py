"""The email channel: SMTP listener and IMAP in, DKIM-signed SMTP replies out.

Inside this package ``email`` always means the standard library (absolute imports), never
this package, which is ``connectors.email``.
"""

from connectors.email.connector import EmailChannelConfig, EmailConnector
from connectors.email.spec import SPEC

__all__ = ["SPEC", "EmailChannelConfig", "EmailConnector"]
