"""Benchmarks of the gateway (``python -m bench``; ``make bench``). Never timed assertions in tests.

One run measures, side by side and under the same conditions:

(a) a bare aiohttp POST handler that reads the body and answers 202 — the baseline;
(b) the HTTP API channel's ingest path of the real gateway (``flowbiz serve --role web``:
    verify the HMAC signature, dedupe, durable append, then the 202) on each store;
(c) end to end at a fixed rate: signed message in → rules agent → signed callback delivered
    to a local receiver, one gateway process (``--role all``);
(d) a worker SIGKILLed during a 2,000-message run (lost / answered twice / recovery gap);
each channel's ingest on Redis beside its plain-SDK baseline: Slack (slack-bolt ``AsyncApp``),
LINE (``WebhookParser``), WhatsApp (twilio ``RequestValidator``), email (aiosmtpd, no-op);
(e) scale-out: 1 and 2 gateway processes on one Redis; (f) Redis bytes per idle
conversation by key family; (g) gateway RSS over many messages (``--long``: a million).

Servers run as separate processes pinned to their own core; the load generator (wrk with
``sign.lua``, which replays pre-signed requests with unique event ids) runs on another.

Layout — each case is a small module under :mod:`bench.cases` exposing ``cases()``:

- :mod:`bench.cases.bare_aiohttp` — the baseline server (also runnable as a module);
- :mod:`bench.cases.http_api` — the HTTP API channel's ingest cases and its request signer;
- :mod:`bench.cases.slack`, :mod:`~bench.cases.line`, :mod:`~bench.cases.whatsapp`,
  :mod:`~bench.cases.email` — each channel's plain-SDK baseline (runnable as a module) and
  its gateway case, fed the same signed requests; the table shows each case against the
  bare-aiohttp baseline and against its own;
- :mod:`bench.smtpload` — the SMTP load generator (wrk does not speak SMTP);
- :mod:`bench.channels_e2e` — every channel end to end (signed webhook or mail in, the
  reply's arrival at the platform emulator), beside the HTTP channel's row;
- :mod:`bench.scale` — scale-out, Redis memory per conversation, RSS over many messages.
"""
