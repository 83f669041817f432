"""Structured JSON logs with dotted event names, bound context and masking.

``log.info("inbound.accepted", channel="line", tenant="acme")`` writes one JSON line with
the event, the fields, and the context bound for the current task (trace id, tenant,
channel, conversation). Fields that can carry message text or credentials are masked
before they are written, whatever the caller passed.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

__all__ = ["bind", "configure_logging", "get_logger", "mask"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "flowbiz_log_context", default=_EMPTY
)

# Field names whose values are never written as they are.
_SECRET_FIELDS = frozenset(
    {
        "authorization",
        "api_key",
        "password",
        "secret",
        "signature",
        "token",
        "access_token",
        "reply_token",
        "auth_token",
    }
)
_TEXT_FIELDS = frozenset({"text", "body", "raw", "payload", "subject", "content"})


def mask(key: str, value: Any) -> Any:
    name = key.lower()
    if name in _SECRET_FIELDS or name.endswith(("_secret", "_token", "_password", "_key")):
        return "***"
    if name in _TEXT_FIELDS:
        size = len(value) if isinstance(value, str | bytes) else None
        return f"<{size} chars>" if size is not None else "<masked>"
    return value


@contextmanager
def bind(**fields: Any) -> Iterator[None]:
    """Add context to every log line written inside the block (task-local)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": round(record.created, 6),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = {**_context.get(), **getattr(record, "fields", {})}
        data.update({k: mask(k, v) for k, v in fields.items()})
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class BoundLogger:
    """A thin wrapper: ``log.info("event.name", key=value)``."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def _log(self, level: int, event: str, fields: dict[str, Any]) -> None:
        if self._logger.isEnabledFor(level):
            exc_info = fields.pop("exc_info", None)
            self._logger.log(level, event, extra={"fields": fields}, exc_info=exc_info)

    def debug(self, event: str, **fields: Any) -> None:
        self._log(logging.DEBUG, event, fields)

    def info(self, event: str, **fields: Any) -> None:
        self._log(logging.INFO, event, fields)

    def warning(self, event: str, **fields: Any) -> None:
        self._log(logging.WARNING, event, fields)

    def error(self, event: str, **fields: Any) -> None:
        self._log(logging.ERROR, event, fields)


def get_logger(name: str) -> BoundLogger:
    return BoundLogger(logging.getLogger(name))


def configure_logging(level: str = "info", *, stream: Any = None) -> None:
    """JSON lines on stderr (or ``stream``) for the gateway's and the SDKs' loggers."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.Formatter.converter = time.gmtime
