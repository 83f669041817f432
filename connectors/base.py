"""The ``Connector`` protocol and the framework-neutral request objects at the edge.

A connector turns a platform's requests into :class:`~gateway.models.InboundMessage` and
delivers :class:`~gateway.models.OutboundMessage`. It never sees aiohttp's ``Request``: the
web layer hands it an :class:`InboundRequest` and sends back its :class:`InboundResponse`
*after* the messages it returned are durably in the inbox (ack only after the append).

Inbound is two steps. The **edge** (a route, on the acknowledged path) verifies the request
and appends each event as the platform sent it (:func:`gateway.envelope.encode_raw_event`,
with the keys admission needs); the **parse** (``Connector.parse``, in the worker) turns one
stored event into a message, or into nothing for an event that needs no answer. Parsing that
fails raises :class:`~gateway.errors.EventParseError` and dead-letters the event, never the
request the platform already had its answer to.

Listeners that are not HTTP routes (Slack Socket Mode, the SMTP server, IMAP) run in
``start()`` and call ``context.ingest.submit(...)`` themselves before acknowledging.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from gateway.contacts.names import NameCache
from gateway.models import (
    Channel,
    DeliveryReceipt,
    EncodedInbound,
    InboundMessage,
    OutboundMessage,
    PersonaPresentation,
)
from gateway.parts import AttachmentKind

if TYPE_CHECKING:
    import aiohttp

    from gateway.config import GatewayConfig
    from gateway.envelope import RawEvent
    from gateway.ingest import Ingestor
    from gateway.media import MediaService
    from gateway.metrics import Metrics
    from gateway.store import Keyspace, Store

__all__ = [
    "ALL_MEDIA",
    "FORM",
    "JSON",
    "ChannelCapabilities",
    "Connector",
    "ConnectorContext",
    "InboundRequest",
    "InboundResponse",
    "InboundResult",
    "Pacing",
    "Route",
    "StreamingDraft",
    "TypingIndicator",
]


JSON = ("application/json",)
FORM = ("application/x-www-form-urlencoded",)


class InboundRequest:
    """A platform's HTTP request, independent of the web framework.

    ``url`` and ``query`` may be given as zero-argument callables: they are then computed on
    first read and kept. The web edge passes them that way because building the URL costs
    several microseconds per request and only URL-signing platforms (Twilio) read it.

    ``headers`` is read through :meth:`header`, which finds a name in any case: the web edge
    passes aiohttp's case-insensitive view as it is (no copy per request); a plain mapping
    (tests, other listeners) must use lower-cased names.
    """

    __slots__ = ("_query", "_url", "body", "headers", "match_info", "method", "path", "remote")

    def __init__(
        self,
        method: str,
        path: str,
        url: str | Callable[[], str],
        headers: Mapping[str, str],
        query: Mapping[str, str] | Callable[[], Mapping[str, str]],
        body: bytes,
        remote: str | None = None,
        match_info: Mapping[str, str] | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self._url = url
        self.headers = headers  # case-insensitive, or lower-cased names
        self._query = query
        self.body = body
        self.remote = remote
        self.match_info: Mapping[str, str] = {} if match_info is None else match_info

    @property
    def url(self) -> str:
        """The URL as the gateway saw it (scheme://host/path?query)."""
        if not isinstance(self._url, str):
            self._url = self._url()
        return self._url

    @property
    def query(self) -> Mapping[str, str]:
        if callable(self._query):
            self._query = self._query()
        return self._query

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def __repr__(self) -> str:
        return f"InboundRequest(method={self.method!r}, path={self.path!r})"


@dataclass(frozen=True, slots=True)
class InboundResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "text/plain"
    headers: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, data: Any, *, status: int = 200) -> InboundResponse:
        return cls(status=status, body=json.dumps(data).encode(), content_type="application/json")


@dataclass(frozen=True, slots=True)
class InboundResult:
    """What a route produced: messages to make durable, then the response that acks them."""

    messages: Sequence[InboundMessage] = ()
    response: InboundResponse = field(default_factory=InboundResponse)
    # Called with one flag per message (True = new, False = duplicate) to shape the answer;
    # the flags of ``messages`` come first, then those of ``encoded``.
    respond: Callable[[Sequence[bool]], InboundResponse] | None = None
    # Messages already in their inbox form (gateway.models.encode_inbound), for hot paths.
    encoded: Sequence[EncodedInbound] = ()

    def to_admit(self) -> Sequence[InboundMessage | EncodedInbound]:
        """Everything to make durable, in the order of the flags ``respond`` receives."""
        if not self.encoded:
            return self.messages
        if not self.messages:
            return self.encoded
        return [*self.messages, *self.encoded]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str  # aiohttp-style pattern, e.g. "/v1/http/{tenant}/messages"
    handler: Callable[[InboundRequest], Awaitable[InboundResult]]
    name: str = ""
    # Media types a body may have (no parameters); the edge answers 415 to any other before
    # reading the body. Empty: any.
    content_types: tuple[str, ...] = ()
    # Form fields that hold a JSON document (Slack's ``payload``): the edge bounds their
    # nesting as it does a JSON body's. Every other form field is text.
    json_fields: tuple[str, ...] = ()


ALL_MEDIA: tuple[AttachmentKind, ...] = (
    "image",
    "video",
    "audio",
    "file",
    "sticker",
    "location",
    "contact",
    "other",
)


@dataclass(frozen=True, slots=True)
class ChannelCapabilities:
    """What a channel can show natively; agents adapt to it (a webhook bot is told it).

    Every rich part may be sent to any channel: one that cannot show it natively falls back
    to the shared text form (``OutboundMessage.plain_text``). The defaults claim nothing, so
    a channel whose values are not set is described as showing text only."""

    buttons: bool = False
    threads: bool = False
    max_text_length: int = 4000
    markdown: bool = False
    attachments: bool = False
    cards: bool = False  # a card, several as a carousel
    quick_replies: bool = False
    options: bool = False  # an option list as a select menu / list picker
    media_out: tuple[AttachmentKind, ...] = ()  # the attachment kinds sent as files


@dataclass(frozen=True, slots=True)
class Pacing:
    """A token bucket the dispatcher waits on before sending (delay, never drop)."""

    key: str
    rate: float  # sends per second
    burst: float = 1.0


class ConnectorContext:
    """Shared resources a connector may use; all opened and closed by the app.

    Connectors are built when the app is assembled (so their routes can be mounted) but the
    store, the HTTP client session and the ingestor only exist once the app has started:
    reading them earlier is a programming error.
    """

    def __init__(self, *, config: GatewayConfig, keyspace: Keyspace, metrics: Metrics) -> None:
        self.config = config
        self.keyspace = keyspace
        self.metrics = metrics
        self._store: Store | None = None
        self._http: aiohttp.ClientSession | None = None
        self._ingest: Ingestor | None = None
        self._media: MediaService | None = None

    def attach(self, *, store: Store, http: aiohttp.ClientSession, ingest: Ingestor) -> None:
        self._store, self._http, self._ingest = store, http, ingest

    def attach_media(self, media: MediaService) -> None:
        self._media = media

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the store is opened when the app starts")
        return self._store

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._http is None:
            raise RuntimeError("the HTTP client session is opened when the app starts")
        return self._http

    def name_cache(self) -> NameCache:
        """Display names for the parse step, kept in the store for every process."""

        # Read per call: a tenant change swaps the configuration in.
        def ttl() -> float:
            return self.config.pipeline.contact_name_ttl_seconds

        def failure_ttl() -> float:
            return self.config.pipeline.contact_name_failure_ttl_seconds

        return NameCache(
            store=lambda: self.store,
            keyspace=self.keyspace,
            metrics=self.metrics,
            ttl=ttl,
            failure_ttl=failure_ttl,
        )

    @property
    def media(self) -> MediaService:
        """Kept files: their bytes and signed links (gateway/media/service.py)."""
        if self._media is None:
            raise RuntimeError("the media service exists once the app starts")
        return self._media

    @property
    def ingest(self) -> Ingestor:
        if self._ingest is None:
            raise RuntimeError("the ingestor exists once the app starts")
        return self._ingest


class Connector(Protocol):
    """One platform. Instances serve every tenant that configures a channel of its kind."""

    channel: ClassVar[Channel]
    capabilities: ClassVar[ChannelCapabilities]

    def routes(self) -> Sequence[Route]:
        """HTTP routes to mount (webhooks, long-poll endpoints); may be empty."""
        ...

    async def start(self) -> None:
        """Start background listeners (sockets, SMTP, IMAP). Called once at app startup."""
        ...

    async def stop(self) -> None:
        """Stop listeners and release resources. Called once at shutdown."""
        ...

    async def send(self, message: OutboundMessage) -> DeliveryReceipt:
        """Deliver one message, or raise Transient/PermanentDeliveryError."""
        ...

    def pacing(self, message: OutboundMessage) -> Pacing | None:
        """The platform's outbound limit that applies to ``message``, if any."""
        ...

    async def parse(self, event: RawEvent) -> InboundMessage | None:
        """The message in one stored event, or None when it needs no turn (an edit, a bot's
        own post). Runs in the worker, so it may call the platform (a display name, a file);
        raises EventParseError for an event it cannot read."""
        ...


@runtime_checkable
class TypingIndicator(Protocol):
    """A connector whose platform can show that an answer is being written."""

    async def show_typing(self, message: InboundMessage) -> bool | None:
        """Show the indicator for the conversation of ``message``; False when the platform
        has none for this conversation (a LINE group). Called by the worker as its agent
        starts, in a task of its own and under a short timeout: it may raise (counted and
        logged by the worker), and it never delays the reply."""
        ...


@runtime_checkable
class StreamingDraft(Protocol):
    """A connector that can show an answer while it is being written, as a draft that the
    committed reply then replaces (never a second message)."""

    async def show_draft(
        self, message: InboundMessage, text: str, persona: PersonaPresentation
    ) -> bool | None:
        """Show ``text`` (the answer so far) as the draft of the reply to ``message``; False
        when this conversation takes no drafts. The draft must be findable by the reply
        (the first part of a reply whose ``in_reply_to`` is ``message.id``) in any process,
        and by a later turn of the same inbound message (a redelivery after a crash), so
        that both replace it rather than post again. Called by the worker in a task of its
        own, at most every half second, under a short timeout: it may raise."""
        ...
