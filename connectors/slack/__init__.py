"""The Slack channel: Events API, slash commands, buttons and Socket Mode in; threaded,
persona-styled replies out through the Web API."""

from connectors.slack.connector import SlackChannelConfig, SlackConnector
from connectors.slack.spec import SPEC

__all__ = ["SPEC", "SlackChannelConfig", "SlackConnector"]
