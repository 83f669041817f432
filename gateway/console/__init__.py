"""The operators' console: server-rendered pages under ``/console/`` on the operations
listener (or the public port in ``http.operations.mode: public``).

Sign-in with an admin API key (:mod:`.sessions`), the frame every page and action goes
through (:mod:`.web`: session, CSRF, the admin API's own permission decisions), one module
per page in :mod:`.views`, live updates over Server-Sent Events (:mod:`.live`). Templates
(Jinja2, autoescaped) and static files (our CSS, vendored htmx) ship inside the package;
nothing is fetched from elsewhere at run time.
"""

from __future__ import annotations

from types import ModuleType

from aiohttp import web

from gateway.console import live
from gateway.console.views import (
    conversation,
    deadletters,
    health,
    inbox,
    personas,
    queue,
    signin,
    usage,
)
from gateway.console.web import HERE, PAGES

__all__ = ["mount_console"]

# In navigation order. A new page: a module in views/ with PAGE and add_routes, a template.
_VIEWS: tuple[ModuleType, ...] = (inbox, queue, deadletters, conversation, signin, live)
_VIEWS += (usage, personas, health)


def mount_console(app: web.Application) -> None:
    """Add the console's routes and static files to ``app`` (the operations app)."""
    PAGES.clear()
    for view in _VIEWS:
        view.add_routes(app.router)
    app.router.add_static(
        "/console/static/", HERE / "static", show_index=False, follow_symlinks=False
    )
