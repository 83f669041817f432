"""``media:`` — where the gateway keeps the files people send and its agents answer with,
and what it accepts. A tenant's own ``media:`` block narrows the limits for its messages.

Guarantees: the limits a message is held to are the tenant's where it wrote one, the
gateway's otherwise (:meth:`MediaConfig.limits_for`); a content type is allowed when it
matches one pattern of ``allowed_types`` (``image/*`` or ``application/pdf``), compared on
the type the bytes really are, never the one the sender claimed. A pattern that could never
match a judged type (upper case, parameters, no ``/``) and an S3 endpoint that is not an
``http(s)://`` URL are refused when the file is loaded; :func:`folder_problem` judges the
folder (``flowbiz check`` and ``serve`` run it, :mod:`gateway.config_check`).
"""

from __future__ import annotations

import fnmatch
import re
import tempfile
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema

from gateway.secret_ref import Secret

__all__ = [
    "DEFAULT_ALLOWED_TYPES",
    "MediaConfig",
    "MediaLimits",
    "S3Config",
    "folder_problem",
]

# type/subtype as the keeper writes them (lower case, no parameters); `*` for either part,
# or a subtype's trailing `*` (`application/vnd.*`).
_NAME = r"[a-z0-9][a-z0-9!#$&^_.+-]*"
_TYPE_PATTERN = rf"^(\*|{_NAME})/(\*|{_NAME}\*?)$"


def _content_type_pattern(value: str) -> str:
    if re.fullmatch(_TYPE_PATTERN, value) is None:
        raise ValueError(
            f"{value[:80]!r} is not a content type pattern like image/* or application/pdf "
            "(lower case, no parameters)"
        )
    return value


ContentTypePattern = Annotated[
    str,
    AfterValidator(_content_type_pattern),
    # The schema's pattern is looser (a table cell cannot hold the alternation's `|`).
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^[a-z0-9*][a-z0-9!#$&^_.+*-]*/[a-z0-9*][a-z0-9!#$&^_.+*-]*$",
        }
    ),
]


def _endpoint(value: str | None) -> str | None:
    if value is None:
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must be the store's address alone (no query, fragment or user)")
    return value


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
    allowed_types: tuple[ContentTypePattern, ...] = Field(
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
    endpoint_url: Annotated[
        str | None,
        AfterValidator(_endpoint),
        WithJsonSchema({"anyOf": [{"type": "string", "pattern": "^https?://"}, {"type": "null"}]}),
    ] = Field(default=None, description="The endpoint of a store other than AWS (`https://…`).")
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


def folder_problem(folder: Path) -> str | None:
    """Why files could not be kept in ``folder``, judged by trying: a file is made and
    removed there (or in the nearest folder that exists, if it is still to be created), so
    a read-only mount counts as much as the permission bits. None when it would work."""
    target = folder
    while not target.exists():
        if target.parent == target:
            return f"cannot be created: {folder}"
        target = target.parent
    if not target.is_dir():
        if target == folder:
            return f"not a folder: {folder}"
        return f"cannot be created: {target} is not a folder"
    try:
        with tempfile.NamedTemporaryFile(dir=target, prefix=".flowbiz-check-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if target == folder:
            return f"not writable: {folder} ({reason})"
        return f"cannot be created: {target} is not writable ({reason})"
    return None
