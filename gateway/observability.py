"""Structured JSON logs with dotted event names, bound context and masking.

``log.info("inbound.accepted", channel="line", tenant="acme")`` writes one JSON line with
the event, the fields, and the context bound for the current task (trace id, tenant,
channel, conversation). Fields that can carry message text or credentials are masked
before they are written, whatever the caller passed.

Personal data. A conversation key holds a WhatsApp phone number, an email address, a LINE
or Slack user id, so the ``conversation`` field is written as a stable short reference
(:func:`conversation_ref`, the same in every process and line); only DEBUG lines carry the
full key as well (``conversation_full``), so that an operator who turns DEBUG on can map a
reference back. Set ``FLOWBIZ_LOG_HASH_KEY`` (the same value for every process) to key the
reference: without it, someone holding the logs and a list of phone numbers can test them.
Third-party loggers that write addresses or numbers at INFO (aiosmtpd's protocol trace
``mail.log``, the twilio SDK's request dumps) are held at WARNING unless the level is DEBUG.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

__all__ = ["bind", "configure_logging", "conversation_ref", "get_logger", "mask"]

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
# Fields holding a conversation key: written as a reference, in full only on DEBUG lines.
_CONVERSATION_FIELDS = frozenset({"conversation"})
# Loggers of libraries that print addresses or phone numbers at INFO: MAIL FROM / RCPT TO
# (aiosmtpd, the listener's and any in-process SMTP peer's), request lines (twilio).
_PERSONAL_DATA_LOGGERS = ("mail.log", "twilio.http_client", "twilio.async_http_client")
_HASH_KEY_ENV = "FLOWBIZ_LOG_HASH_KEY"
_hash_key = b""


@functools.lru_cache(maxsize=4096)
def conversation_ref(key: str) -> str:
    """A short, stable stand-in for a conversation key in logs: ``c-`` and 12 hex digits."""
    # Cached: a conversation's lines repeat its key, and the cache is emptied whenever the
    # hash key changes (configure_logging), so a reference is never one of an older key.
    digest = hashlib.blake2b(key.encode(), digest_size=6, key=_hash_key)
    return "c-" + digest.hexdigest()


_PLAIN, _SECRET, _CONVERSATION, _TEXT = range(4)


@functools.lru_cache(maxsize=1024)
def _field_kind(key: str) -> int:
    """How a field of this name is written; decided once per name (names are few)."""
    name = key.lower()
    if name in _SECRET_FIELDS or name.endswith(("_secret", "_token", "_password", "_key")):
        return _SECRET
    if name in _CONVERSATION_FIELDS:
        return _CONVERSATION
    if name in _TEXT_FIELDS:
        return _TEXT
    return _PLAIN


def mask(key: str, value: Any) -> Any:
    kind = _field_kind(key)
    if kind == _PLAIN:
        return value
    if kind == _SECRET:
        return "***"
    if kind == _CONVERSATION:
        return conversation_ref(value) if isinstance(value, str) else value
    size = len(value) if isinstance(value, str | bytes) else None
    return f"<{size} chars>" if size is not None else "<masked>"


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
        if record.levelno <= logging.DEBUG:
            data.update({f"{k}_full": fields[k] for k in _CONVERSATION_FIELDS if k in fields})
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
    global _hash_key  # set once at start-up, before any line is written
    secret = os.environ.get(_HASH_KEY_ENV, "").encode()
    _hash_key = hashlib.sha512(secret).digest() if secret else b""  # blake2b keys: <= 64 bytes
    conversation_ref.cache_clear()
    # The JSON lines name no thread or process: spare every record looking them up.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    quiet = logging.NOTSET if level.lower() == "debug" else logging.WARNING
    for name in _PERSONAL_DATA_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    logging.Formatter.converter = time.gmtime
