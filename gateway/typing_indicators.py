"""Typing indicators beside the agent: shown as it starts, never in the way of its reply.

Guarantees: the indicator runs in a task of its own under a short timeout; whatever it
does — fail, hang, raise — the agent's reply is neither delayed nor changed; each attempt is
counted in ``flowbiz_typing_indicators_total{channel, outcome}`` (shown; skipped: the
platform has none for this conversation; failed; timeout).
"""

from __future__ import annotations

import asyncio

from connectors.base import TypingIndicator
from gateway.metrics import Metrics
from gateway.models import InboundMessage
from gateway.observability import get_logger

__all__ = ["TypingIndicators"]

log = get_logger(__name__)

_TIMEOUT = 5.0


class TypingIndicators:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self, connector: TypingIndicator, message: InboundMessage) -> None:
        task = asyncio.create_task(self._show(connector, message), name="typing-indicator")
        self._tasks.add(task)  # held until done: the loop keeps only weak references
        task.add_done_callback(self._tasks.discard)

    async def _show(self, connector: TypingIndicator, message: InboundMessage) -> None:
        try:
            async with asyncio.timeout(_TIMEOUT):
                shown = await connector.show_typing(message)
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:  # noqa: BLE001 - an indicator's failure must not matter
            outcome = "failed"
            log.warning("typing.failed", error_type=type(exc).__name__)
        else:
            outcome = "skipped" if shown is False else "shown"
        self.metrics.typing.labels(message.conversation.channel.value, outcome).inc()
