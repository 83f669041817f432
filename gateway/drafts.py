"""Reply drafts: an answer shown while it is written, never in the way of the reply.

An agent that streams (agents/llm.py with ``stream: true``) reports the text so far through
``AgentContext.on_partial``. For a connector that implements
:class:`connectors.base.StreamingDraft` the worker hands it :meth:`Draft.on_partial`, and
this module shows that text as a draft of the reply. The committed reply replaces the draft
(the connector finds it by the inbound message's id), so the customer sees one message.

Guarantees:

- ``on_partial`` returns at once and never raises: it only keeps the latest text. The
  connector is called from a task of its own, one call at a time, at most once per
  :data:`INTERVAL` seconds (the text that arrived meanwhile is shown when the interval ends:
  the newest text is never lost to the throttle while the answer is being written).
- Each call runs under :data:`TIMEOUT`; a call that fails or times out ends the drafts of
  that turn (the reply then goes out as it would have without them). Every call is counted
  in ``flowbiz_reply_drafts_total{channel, outcome}`` (shown; skipped: the conversation
  takes no drafts; failed; timeout).
- :meth:`Draft.close` (the worker calls it once the agent answered or failed, before the
  commit) cancels any draft not yet started and waits for the one in flight, at most
  :data:`TIMEOUT`, so that the draft's record is written before the reply can look for it:
  a reply never races its own first draft into a second post. That wait is the only time a
  draft may hold up a turn, and only while a draft call is in flight.
"""

from __future__ import annotations

import asyncio
import time

from connectors.base import StreamingDraft
from gateway.metrics import Metrics
from gateway.models import InboundMessage, PersonaPresentation
from gateway.observability import get_logger

__all__ = ["INTERVAL", "TIMEOUT", "Draft", "ReplyDrafts"]

log = get_logger(__name__)

INTERVAL = 0.5
TIMEOUT = 3.0


class ReplyDrafts:
    """Makes one :class:`Draft` per turn, for connectors that show drafts."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def open(
        self, connector: object, message: InboundMessage, persona: PersonaPresentation
    ) -> Draft | None:
        if not isinstance(connector, StreamingDraft):
            return None
        return Draft(connector, message, persona, self.metrics)


class Draft:
    """The draft of one turn's reply."""

    def __init__(
        self,
        connector: StreamingDraft,
        message: InboundMessage,
        persona: PersonaPresentation,
        metrics: Metrics,
    ) -> None:
        self.connector = connector
        self.message = message
        self.persona = persona
        self.metrics = metrics
        self.shown: str | None = None  # the text of the last draft the connector took
        self._latest: str | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._in_flight = False
        self._closed = False

    async def on_partial(self, text: str) -> None:
        if self._closed or not text.strip():
            return
        self._latest = text
        self._wake.set()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="reply-draft")

    async def close(self) -> None:
        """No more drafts: the reply is ready (or the agent failed)."""
        self._closed = True
        task = self._task
        if task is None or task.done():
            return
        if not self._in_flight:
            task.cancel()
        # The task bounds its own call by TIMEOUT; the wait here is only a second fence.
        await asyncio.wait({task}, timeout=TIMEOUT + 0.5)
        if not task.done():
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the turn itself is being cancelled (shutdown): let it go

    async def _run(self) -> None:
        last = float("-inf")
        while not self._closed:
            await self._wake.wait()
            self._wake.clear()
            pause = last + INTERVAL - time.monotonic()
            if pause > 0:
                await asyncio.sleep(pause)  # the throttle: newer text waits, then shows
            text = self._latest
            if self._closed or text is None or text == self.shown:
                continue
            last = time.monotonic()
            self._in_flight = True
            try:
                keep_going = await self._show(text)
            finally:
                self._in_flight = False
            if not keep_going:
                return

    async def _show(self, text: str) -> bool:
        try:
            async with asyncio.timeout(TIMEOUT):
                shown = await self.connector.show_draft(self.message, text, self.persona)
        except TimeoutError:
            outcome = "timeout"
        except Exception as exc:  # noqa: BLE001 - a draft's failure must not matter to the turn
            outcome = "failed"
            log.warning("reply_draft.failed", error_type=type(exc).__name__)
        else:
            outcome = "skipped" if shown is False else "shown"
            if shown is not False:
                self.shown = text
        self.metrics.reply_drafts.labels(self.message.conversation.channel.value, outcome).inc()
        return outcome == "shown"
