"""(a) The baseline: a bare aiohttp POST handler that reads the body and answers 202.

Same route pattern and same requests as the gateway's HTTP API channel, no verification,
no store. Run by the bench as ``python -m bench.cases.bare_aiohttp PORT``.
"""

from __future__ import annotations

import sys

from aiohttp import web

from bench.cases import RunContext, ThroughputCase
from bench.cases.http_api import signed_messages
from bench.procs import Server, free_port, python_module, spawn, wait_http

ROUTE = "/v1/channels/http/{tenant}/messages"


async def _accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(status=202)


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def serve(port: int) -> None:
    app = web.Application()
    app.router.add_post(ROUTE, _accept)
    app.router.add_get("/healthz", _healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def _start(ctx: RunContext) -> Server:
    where = ctx.scratch("bare")
    port = free_port()
    log_path = where / "bare.log"
    proc = spawn(
        python_module("bench.cases.bare_aiohttp", str(port)),
        cores=ctx.placement.server,
        log_path=log_path,
    )
    server = Server(name="bare", url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    wait_http(server.url + "/healthz", proc=proc)
    return server


def cases() -> list[ThroughputCase]:
    return [
        ThroughputCase(
            key="bare",
            label="(a) bare aiohttp POST -> 202",
            requests=signed_messages,
            start=_start,
            unique=False,
        )
    ]


if __name__ == "__main__":
    serve(int(sys.argv[1]))
