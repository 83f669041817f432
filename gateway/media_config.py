"""``media:`` — where the gateway keeps the files people send and its agents answer with,
and what it accepts. A tenant's own ``media:`` block narrows the limits for its messages.

Guarantees: the limits a message is held to are the tenant's where it wrote one, the
gateway's otherwise (:meth:`MediaConfig.limits_for`); a content type is allowed when it
matches one pattern of ``allowed_types`` (``image/*`` or ``application/pdf``), compared on
the type the bytes really are, never the one the sender claimed.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from gateway.secret_ref import Secret

__all__ = ["DEFAULT_ALLOWED_TYPES", "MediaConfig", "MediaLimits", "S3Config"]

DEFAULT_ALLOWED_TYPES = (
    "image/*",
    "audio/*",
    "video/*",
    "application/pdf",
    "text/plain",
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class MediaLimits(_Model):
    """What one message's files may be."""

    max_bytes: int = Field(
        default=10 * 1024 * 1024,
        gt=0,
        description="A bigger file is not kept (refused `too_large`); the message's text "
        "still reaches the agent.",
    )
    allowed_types: tuple[str, ...] = Field(
        default=DEFAULT_ALLOWED_TYPES,
        description="Content types kept (patterns like `image/*`), judged on the bytes; "
        "another type is refused `type_not_allowed`.",
    )
    retention_days: float = Field(
        default=30,
        gt=0,
        description="Kept files older than this are deleted (hourly sweep).",
    )

    def allows(self, content_type: str) -> bool:
        return any(fnmatch.fnmatchcase(content_type, p) for p in self.allowed_types)


class S3Config(_Model):
    """An S3-compatible object store for the files (AWS S3, MinIO, Ceph, R2…)."""

    bucket: str = Field(min_length=3, max_length=63, description="The bucket (it must exist).")
    prefix: str = Field(default="flowbiz/", description="Prepended to every object's key.")
    endpoint_url: str | None = Field(
        default=None, description="The endpoint of a store other than AWS (`https://…`)."
    )
    region: str = Field(default="us-east-1", description="The bucket's region.")
    access_key_id: Secret = Field(description="`env:NAME` of the access key id.")
    secret_access_key: Secret = Field(description="`env:NAME` of the secret access key.")


class MediaConfig(MediaLimits):
    """The gateway's files: where they are kept and the default limits."""

    dir: Path = Field(
        default=Path("media"),
        description="The folder files are kept in when no `s3` is given, relative to this file.",
    )
    s3: S3Config | None = Field(
        default=None, description="Keep files in an S3-compatible object store instead."
    )
    download: bool = Field(
        default=True,
        description="Fetch inbound files from the platforms and keep them; false: pass "
        "their metadata only.",
    )
    link_ttl_seconds: int = Field(
        default=900,
        ge=30,
        le=7 * 24 * 3600,
        description="How long a signed link to a kept file works (the platforms that fetch "
        "files by URL — LINE, Twilio — and the webhook agents get these).",
    )
    link_secrets: tuple[Secret, ...] = Field(
        default=(),
        description="Sign the links, newest first (a rotation keeps the old one second). "
        "Empty: a key made once and kept in the store, shared by every process.",
    )

    def limits_for(self, tenant: MediaLimits | None) -> MediaLimits:
        return self if tenant is None else tenant
