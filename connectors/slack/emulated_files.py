"""The emulated Slack's files and assistant threads: hosting, external upload, setStatus.

:class:`EmulatedFiles` adds to a :class:`~connectors.slack.emulator.SlackEmulator`:

- ``GET /files-pri/…`` — the files :meth:`EmulatedFiles.host` put there, served only with
  ``Authorization: Bearer <a workspace's bot token>`` (Slack's ``files:read``); every
  request is recorded in :attr:`EmulatedFiles.downloads` with the token it carried;
- the external upload: ``POST /api/files.getUploadURLExternal`` (``filename``, ``length``)
  answers an ``upload_url`` here and a file id; ``POST /upload/v1/<ticket>`` takes the
  bytes (raw, or a multipart ``file`` field); ``POST /api/files.completeUploadExternal``
  (``files`` JSON, ``channel_id``, ``thread_ts``) shares them — refused when the bytes did
  not arrive or their length is not the one announced — and records the file in
  :attr:`EmulatedFiles.uploaded`, bytes included;
- ``POST /api/assistant.threads.setStatus`` — recorded in :attr:`EmulatedFiles.statuses`
  (after :attr:`EmulatedFiles.status_delay` seconds: a slow Slack).

Each Web API method honours the emulator's ``fail_next``; ``drop_next`` on
``files.completeUploadExternal`` shares the file and then cuts the connection.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from connectors.slack.emulated_host import SlackApiHost
from connectors.slack.emulated_payloads import ACME_FILE

__all__ = ["EmulatedFiles", "HostedFile", "UploadedFile"]


class _Slack(SlackApiHost, Protocol):
    """What this needs of the emulator it adds to, besides its Web API handling."""

    @property
    def base_url(self) -> str: ...

    def _dropped(self, method: str, args: dict[str, Any], token: str | None) -> bool: ...


@dataclass(frozen=True, slots=True)
class HostedFile:
    data: bytes
    mimetype: str


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """A file shared in a conversation through the external upload."""

    id: str
    name: str
    title: str | None
    data: bytes
    channel: str | None
    thread_ts: str | None
    team_id: str | None


@dataclass(slots=True)
class _Pending:
    id: str
    name: str
    length: int
    team_id: str | None
    data: bytes | None = None


@dataclass(slots=True)
class EmulatedFiles:
    emulator: _Slack
    hosted: dict[str, HostedFile] = field(default_factory=dict)
    downloads: list[tuple[str, str | None]] = field(default_factory=list)  # (path, token)
    uploaded: list[UploadedFile] = field(default_factory=list)
    upload_posts: list[str] = field(default_factory=list)  # file ids whose bytes came
    statuses: list[dict[str, Any]] = field(default_factory=list)
    status_delay: float = 0.0  # seconds setStatus takes to answer (a slow Slack)
    _pending: dict[str, _Pending] = field(default_factory=dict)  # ticket → upload
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/files-pri/{path:.*}", self._download)
        app.router.add_post("/api/files.getUploadURLExternal", self._get_upload_url)
        app.router.add_post("/upload/v1/{ticket}", self._upload)
        app.router.add_post("/api/files.completeUploadExternal", self._complete)
        app.router.add_post("/api/assistant.threads.setStatus", self._set_status)

    def host(
        self,
        data: bytes,
        *,
        name: str = "photo.png",
        mimetype: str = "image/png",
        team_id: str = "T0FLOWBIZ",
        user: str = "U0CUSTOMER",
    ) -> dict[str, Any]:
        """Keep ``data`` as a file of the workspace; its ``files[]`` entry, as Slack puts it
        on a ``file_share`` message (both URLs on this emulator)."""
        file_id = f"F0{next(self._ids):08d}"
        base = f"/files-pri/{team_id}-{file_id}"
        self.hosted[f"{base}/{name}"] = HostedFile(data, mimetype)
        self.hosted[f"{base}/download/{name}"] = HostedFile(data, mimetype)
        return {
            **ACME_FILE,
            "id": file_id,
            "name": name,
            "title": name,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1],
            "user": user,
            "user_team": team_id,
            "size": len(data),
            "url_private": f"{self.emulator.base_url}{base}/{name}",
            "url_private_download": f"{self.emulator.base_url}{base}/download/{name}",
        }

    def _refuse(
        self, method: str, args: dict[str, Any], token: str | None, error: str
    ) -> web.Response:
        return self.emulator._answer(method, args, token, {"ok": False, "error": error})

    async def _download(self, request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else None
        self.downloads.append((request.path, token))
        if self.emulator._workspace(token) is None:
            return web.Response(status=403, text="not_authed")
        hosted = self.hosted.get(request.path)
        if hosted is None:
            return web.Response(status=404, text="file_not_found")
        return web.Response(body=hosted.data, content_type=hosted.mimetype)

    async def _get_upload_url(self, request: web.Request) -> web.Response:
        method = "files.getUploadURLExternal"
        args, token = await self.emulator._args(request)
        injected = await self.emulator._injected(method, args, token, request)
        if injected is not None:
            return injected
        ws = self.emulator._workspace(token)
        if ws is None:
            return self.emulator._answer(
                method, args, token, {"ok": False, "error": "invalid_auth"}
            )
        try:
            length = int(args.get("length", ""))
        except ValueError:
            length = -1
        if not args.get("filename") or length < 1:
            return self._refuse(method, args, token, "invalid_arguments")
        ticket = uuid.uuid4().hex
        pending = _Pending(f"F0UP{next(self._ids):06d}", str(args["filename"]), length, ws.team_id)
        self._pending[ticket] = pending
        return self.emulator._answer(
            method,
            args,
            token,
            {
                "ok": True,
                "upload_url": f"{self.emulator.base_url}/upload/v1/{ticket}",
                "file_id": pending.id,
            },
        )

    async def _upload(self, request: web.Request) -> web.Response:
        pending = self._pending.get(request.match_info["ticket"])
        if pending is None:
            return web.Response(status=404, text="upload_not_found")
        if request.content_type.startswith("multipart/"):
            form = await request.post()
            part = form.get("file")
            data = part.file.read() if isinstance(part, web.FileField) else b""
        else:
            data = await request.read()
        pending.data = data
        self.upload_posts.append(pending.id)
        return web.Response(text=f"OK - {len(data)}")

    async def _complete(self, request: web.Request) -> web.Response:
        method = "files.completeUploadExternal"
        args, token = await self.emulator._args(request)
        injected = await self.emulator._injected(method, args, token, request)
        if injected is not None:
            return injected
        if self.emulator._workspace(token) is None:
            return self.emulator._answer(
                method, args, token, {"ok": False, "error": "invalid_auth"}
            )
        try:
            files = json.loads(str(args.get("files", "")))
        except ValueError:
            files = None
        if not isinstance(files, list) or not files:
            return self._refuse(method, args, token, "invalid_arguments")
        by_id = {p.id: (ticket, p) for ticket, p in self._pending.items()}
        shared = []
        for entry in files:
            found = by_id.get(str(entry.get("id"))) if isinstance(entry, dict) else None
            if found is None or found[1].data is None or len(found[1].data) != found[1].length:
                return self._refuse(method, args, token, "upload_not_complete")
            ticket, pending = found
            del self._pending[ticket]
            assert pending.data is not None  # checked above
            self.uploaded.append(
                UploadedFile(
                    id=pending.id,
                    name=pending.name,
                    title=entry.get("title"),
                    data=pending.data,
                    channel=args.get("channel_id"),
                    thread_ts=args.get("thread_ts"),
                    team_id=pending.team_id,
                )
            )
            shared.append({"id": pending.id, "title": entry.get("title") or pending.name})
        await self.emulator._notify()
        if self.emulator._dropped(method, args, token):
            assert request.transport is not None
            request.transport.close()  # shared; the answer never arrives
            return web.Response()
        return self.emulator._answer(method, args, token, {"ok": True, "files": shared})

    async def _set_status(self, request: web.Request) -> web.Response:
        method = "assistant.threads.setStatus"
        await asyncio.sleep(self.status_delay)
        args, token = await self.emulator._args(request)
        injected = await self.emulator._injected(method, args, token, request)
        if injected is not None:
            return injected
        if self.emulator._workspace(token) is None:
            return self.emulator._answer(
                method, args, token, {"ok": False, "error": "invalid_auth"}
            )
        if not args.get("channel_id") or not args.get("thread_ts") or "status" not in args:
            return self._refuse(method, args, token, "invalid_arguments")
        self.statuses.append(dict(args))
        await self.emulator._notify()
        return self.emulator._answer(method, args, token, {"ok": True})
