"""Reads slack_sdk's refusals for :class:`connectors.send_policy.map_delivery_errors`.

A Web API refusal is a :class:`SlackApiError`; its ``platform_code`` is Slack's ``error``
(``channel_not_found``), or ``http_<status>`` when the body has none. Slack answers most
refusals with HTTP 200, so :data:`SLACK_CODES` gives the errors that mean something other
than "rejected" their failure.
"""

from __future__ import annotations

from slack_sdk.errors import SlackApiError

from connectors.send_policy import DeliveryFailure, PlatformAnswer

__all__ = ["SLACK_CODES", "read_slack", "slack_error_code"]

SLACK_CODES: dict[str, DeliveryFailure] = {
    "ratelimited": DeliveryFailure.RATE_LIMITED,
    "internal_error": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "fatal_error": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "service_unavailable": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "request_timeout": DeliveryFailure.PLATFORM_UNAVAILABLE,
    "invalid_auth": DeliveryFailure.UNAUTHORIZED,
    "not_authed": DeliveryFailure.UNAUTHORIZED,
    "account_inactive": DeliveryFailure.UNAUTHORIZED,
    "token_revoked": DeliveryFailure.UNAUTHORIZED,
    "token_expired": DeliveryFailure.UNAUTHORIZED,
    "missing_scope": DeliveryFailure.UNAUTHORIZED,
    "not_allowed_token_type": DeliveryFailure.UNAUTHORIZED,
}


def slack_error_code(exc: SlackApiError) -> str:
    """Slack's ``error`` from the response body, else ``http_<status>``."""
    data = exc.response.data
    error = data.get("error") if isinstance(data, dict) else None
    return error if isinstance(error, str) else f"http_{exc.response.status_code}"


def read_slack(exc: BaseException) -> PlatformAnswer | None:
    if not isinstance(exc, SlackApiError):
        return None
    return PlatformAnswer(
        exc.response.status_code, slack_error_code(exc), headers=exc.response.headers
    )
