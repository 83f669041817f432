"""The Slack channel: Events API, slash commands, buttons and Socket Mode in; threaded,
persona-styled replies out through the Web API."""

from connectors.slack.config import SlackChannelConfig
from connectors.slack.spec import SPEC

__all__ = ["SPEC", "SlackChannelConfig", "SlackConnector"]


def __getattr__(name: str) -> object:
    # The connector (and the platform SDK under it) is loaded only when asked for.
    if name == "SlackConnector":
        from connectors.slack.connector import SlackConnector

        return SlackConnector
    raise AttributeError(name)
