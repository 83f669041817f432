"""Benchmarks of the gateway (``python -m bench``; ``make bench``). Never timed assertions in tests.

One run measures, side by side and under the same conditions:

(a) a bare aiohttp POST handler that reads the body and answers 202 — the baseline;
(b) the HTTP API channel's ingest path of the real gateway (``flowbiz serve --role web``:
    verify the HMAC signature, dedupe, durable append, then the 202) on each store;
(c) end to end at a fixed rate: signed message in → rules agent → signed callback delivered
    to a local receiver, one gateway process (``--role all``);
(d) a worker SIGKILLed during a 2,000-message run (lost / answered twice / recovery gap).

Servers run as separate processes pinned to their own core; the load generator (wrk with
``sign.lua``, which replays pre-signed requests with unique event ids) runs on another.

Layout — each case is a small module under :mod:`bench.cases` exposing ``cases()``:

- :mod:`bench.cases.bare_aiohttp` — the baseline server (also runnable as a module);
- :mod:`bench.cases.http_api` — the HTTP API channel's ingest cases and its request signer.

A channel that lands in ``connectors/<kind>/`` adds ``bench/cases/<kind>.py`` with its own
plain-SDK baseline (for example a bare slack-bolt ``AsyncApp``) and its gateway case, both
fed the same signed requests; the table shows each case against the bare-aiohttp baseline
and against its own.
"""
