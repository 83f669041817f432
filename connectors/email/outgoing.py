"""The files of a reply: attached, inline, linked or described, within the size budget.

For each outbound attachment, in order, then each card's image:

- a kept blob (:meth:`MediaService.read`) is attached as a MIME part (a card's image inline,
  ``cid:``), while the files so far fit ``max_outbound_attachment_bytes``; beyond it, a file
  is sent as a signed link to the gateway's copy (:meth:`MediaService.link`) and a card's
  image is left out (no remote picture of ours in a mail);
- an agent's ``https`` URL is passed on as a link (a card's image as its ``src``), never
  fetched;
- a place or a contact card is written as its text form, and a file that cannot be had
  (:class:`MediaUnavailable`: no blob and no URL, or the blob is gone) too, counted
  ``flowbiz_media_total{direction="out",outcome="degraded"}``; the others count ``sent``
  (attached) or ``linked``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from connectors.email.compose import MailFile, safe_filename
from connectors.email.rich import FileLine
from gateway.media import MediaService, MediaUnavailable
from gateway.metrics import Metrics
from gateway.models import OutboundMessage
from gateway.observability import get_logger
from gateway.parts import Attachment

__all__ = ["Outgoing", "gather_files"]

log = get_logger(__name__)

# Mail is read days after it is sent, unlike chat: a file past the attachment budget goes as
# a link that lives a week (the file itself lives as long as the tenant's retention).
MAIL_LINK_SECONDS = 7 * 24 * 3600


@dataclass(slots=True)
class Outgoing:
    files: list[MailFile] = field(default_factory=list)  # attached and inline
    card_images: dict[int, str] = field(default_factory=dict)  # card index → img src
    lines: list[FileLine] = field(default_factory=list)  # what the HTML names
    described: list[Attachment] = field(default_factory=list)  # what the text part names


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, size: int) -> bool:
        if size > self.left:
            return False
        self.left -= size
        return True


async def gather_files(
    message: OutboundMessage,
    media: MediaService | None,
    *,
    limit: int,
    metrics: Metrics,
    content_id_tag: str,
) -> Outgoing:
    """What ``message``'s attachments and card images become in the mail."""
    out = Outgoing()
    budget = _Budget(limit)
    count = metrics.media.labels
    for attachment in message.attachments:
        if attachment.location is not None or attachment.contact is not None:
            _describe(out, attachment)
            continue
        try:
            if attachment.blob is None or media is None:
                raise MediaUnavailable("no kept file")
            info, data = await media.read(attachment)
            if budget.take(len(data)):
                name = safe_filename(attachment.name or info.name, fallback=attachment.kind)
                out.files.append(MailFile(data, info.content_type, name))
                count("email", "out", "sent").inc()
                continue
            _link(out, attachment, media.link(attachment, ttl_seconds=MAIL_LINK_SECONDS))
            count("email", "out", "linked").inc()
        except MediaUnavailable:
            if attachment.blob is None and (attachment.url or "").startswith("https://"):
                _link(out, attachment, str(attachment.url))  # the agent's own, never fetched
                count("email", "out", "linked").inc()
                continue
            _describe(out, attachment)
            count("email", "out", "degraded").inc()
        except OSError:
            log.error("email.attachment_unreadable", kind=attachment.kind)
            _describe(out, attachment)
            count("email", "out", "degraded").inc()
    for index, card in enumerate(message.cards):
        image = card.image
        if image is None:
            continue
        if image.blob is not None and media is not None:
            try:
                info, data = await media.read(image)
            except (MediaUnavailable, OSError):
                count("email", "out", "degraded").inc()
                continue
            if info.content_type.startswith("image/") and budget.take(len(data)):
                content_id = f"card{index}.{content_id_tag}@flowbiz"
                name = safe_filename(image.name or info.name, fallback=f"card{index}")
                out.files.append(MailFile(data, info.content_type, name, content_id))
                out.card_images[index] = f"cid:{content_id}"
                count("email", "out", "sent").inc()
            else:
                count("email", "out", "degraded").inc()
        elif (image.url or "").startswith("https://"):
            out.card_images[index] = str(image.url)
    return out


def _link(out: Outgoing, attachment: Attachment, url: str) -> None:
    label = attachment.name or attachment.kind
    out.lines.append(FileLine(label, url))
    out.described.append(attachment.model_copy(update={"url": url}))


def _describe(out: Outgoing, attachment: Attachment) -> None:
    text = attachment.model_copy(update={"url": None}).describe()
    out.lines.append(FileLine(text))
    out.described.append(attachment.model_copy(update={"url": None}))
