"""What a webhook bot may answer, checked whole before any of it is queued.

A bot's answer is a stranger's input that the gateway turns into messages on a customer's
channel, so it is held to these rules (:func:`checked_reply`), and an answer that breaks any
of them is refused whole (:class:`InvalidAnswer`; the customer gets the persona's
``failure_reply``):

- every list is bounded (parts, attachments, buttons, quick replies, cards, options) and
  every part is one of the rich message's models (:mod:`gateway.parts`);
- an attachment (a part's, or a card's image) is exactly one of: a public ``https`` ``url``
  (length-bounded, no credentials in it; passed on to the platform and never fetched by the
  gateway), a ``blob`` the gateway kept, a place or a contact card;
- a ``blob`` must belong to the conversation being answered — its id names its tenant and
  conversation (:func:`gateway.media.blobs.parse_blob_id`) — and must still be kept: a bot
  cannot send a file of another tenant or another conversation, whatever id it guesses or
  was once given. The attachment then carries the type the bytes were judged to be, never
  what the bot claimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.base import AgentReply, ReplyPart
from gateway.errors import AgentError
from gateway.media.blobs import BlobNotFound, conversation_digest, parse_blob_id
from gateway.models import (
    Attachment,
    Button,
    Card,
    ContactCard,
    ConversationKey,
    Location,
    OptionList,
)
from gateway.parts import AttachmentKind

if TYPE_CHECKING:
    from gateway.media import MediaService

__all__ = ["BotAnswer", "BotAttachment", "InvalidAnswer", "checked_reply"]

MAX_URL_LENGTH = 2000
_MAX_TEXT = 20_000
# Kinds whose files a platform shows by their type: a blob that is not of that type is
# sent as a plain file rather than as what the bot called it.
_TYPED_KINDS = frozenset({"image", "video", "audio"})


class InvalidAnswer(AgentError):
    """The bot's answer breaks the rules above; ``reason`` is a short, bounded word."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class BotAttachment(_Strict):
    kind: AttachmentKind = "file"
    name: str | None = Field(default=None, max_length=200)
    mime_type: str | None = Field(default=None, max_length=100, pattern=r"^[\w.+-]+/[\w.+-]+$")
    url: str | None = Field(default=None, max_length=MAX_URL_LENGTH)
    blob: str | None = Field(default=None, max_length=200)
    location: Location | None = None
    contact: ContactCard | None = None

    @field_validator("url")
    @classmethod
    def _public_https(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("the url holds spaces or control characters")
        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("an attachment url must be an absolute https URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError("an attachment url must not carry credentials")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> BotAttachment:
        given = [x is not None for x in (self.url, self.blob, self.location, self.contact)]
        if sum(given) != 1:
            raise ValueError("an attachment has exactly one of url, blob, location, contact")
        return self


class BotCard(_Strict):
    title: str = Field(min_length=1, max_length=80)
    text: str = Field(default="", max_length=400)
    image: BotAttachment | None = None
    buttons: tuple[Button, ...] = Field(default=(), max_length=3)


class BotPart(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    text: str = Field(default="", max_length=_MAX_TEXT)
    buttons: tuple[Button, ...] = Field(default=(), max_length=20)
    attachments: tuple[BotAttachment, ...] = Field(default=(), max_length=10)
    quick_replies: tuple[Button, ...] = Field(default=(), max_length=13)
    cards: tuple[BotCard, ...] = Field(default=(), max_length=10)
    options: OptionList | None = None


class BotAnswer(BaseModel):
    """``{"parts": [...], "switch_persona", "handoff"}``; the fields of one part at the top
    level are the shorthand for a first part."""

    model_config = ConfigDict(extra="ignore")

    parts: tuple[BotPart, ...] = Field(default=(), max_length=10)
    text: str | None = Field(default=None, max_length=_MAX_TEXT)
    buttons: tuple[Button, ...] = Field(default=(), max_length=20)
    attachments: tuple[BotAttachment, ...] = Field(default=(), max_length=10)
    quick_replies: tuple[Button, ...] = Field(default=(), max_length=13)
    cards: tuple[BotCard, ...] = Field(default=(), max_length=10)
    options: OptionList | None = None
    switch_persona: str | None = Field(default=None, max_length=100)
    handoff: str | None = Field(default=None, max_length=500)

    def all_parts(self) -> tuple[BotPart, ...]:
        rich = self.attachments or self.cards or self.quick_replies or self.options is not None
        if self.text is None and not rich:
            return self.parts
        first = BotPart(
            text=self.text or "",
            buttons=self.buttons,
            attachments=self.attachments,
            quick_replies=self.quick_replies,
            cards=self.cards,
            options=self.options,
        )
        return (first, *self.parts)


async def _attachment(
    given: BotAttachment, conversation: ConversationKey, media: MediaService | None
) -> Attachment:
    if given.location is not None:
        return Attachment(kind="location", name=given.name, location=given.location)
    if given.contact is not None:
        return Attachment(kind="contact", name=given.name, contact=given.contact)
    if given.url is not None:
        return Attachment(
            kind=given.kind, name=given.name, mime_type=given.mime_type, url=given.url
        )
    assert given.blob is not None  # exactly one source: checked by the model
    try:
        tenant, digest, _ = parse_blob_id(given.blob)
    except BlobNotFound:
        raise InvalidAnswer("a blob id is malformed", reason="bad_blob") from None
    if tenant != conversation.tenant or digest != conversation_digest(conversation.key):
        raise InvalidAnswer("a blob of another conversation", reason="foreign_blob")
    if media is None:
        return Attachment(kind=given.kind, name=given.name, blob=given.blob)
    try:
        info = await media.blobs.info(given.blob)
    except BlobNotFound:
        raise InvalidAnswer("a blob that is not kept", reason="unknown_blob") from None
    except OSError:
        # The store is out of reach now: the connector tries again when it sends, and
        # degrades the file to its text form if it still cannot read it.
        return Attachment(kind=given.kind, name=given.name, blob=given.blob)
    kind = given.kind
    if kind in _TYPED_KINDS and not info.content_type.startswith(f"{kind}/"):
        kind = "file"
    return Attachment(
        kind=kind,
        name=given.name or info.name,
        mime_type=info.content_type,
        size=info.size,
        blob=info.id,
        sha256=info.sha256,
    )


async def checked_reply(
    answer: BotAnswer, conversation: ConversationKey, media: MediaService | None
) -> AgentReply:
    """The bot's answer as a reply, every file checked (see the module docstring)."""
    parts = []
    for part in answer.all_parts():
        attachments = tuple([await _attachment(a, conversation, media) for a in part.attachments])
        cards = tuple(
            [
                Card(
                    title=card.title,
                    text=card.text,
                    image=None
                    if card.image is None
                    else await _attachment(card.image, conversation, media),
                    buttons=card.buttons,
                )
                for card in part.cards
            ]
        )
        parts.append(
            ReplyPart(
                text=part.text,
                buttons=part.buttons,
                attachments=attachments,
                quick_replies=part.quick_replies,
                cards=cards,
                options=part.options,
            )
        )
    return AgentReply(
        parts=tuple(parts), switch_persona=answer.switch_persona, handoff=answer.handoff
    )
