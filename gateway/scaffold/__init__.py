"""``flowbiz init``: a new project folder, ready for ``flowbiz check`` and ``flowbiz serve``.

- :mod:`gateway.scaffold.options` — what the user typed, validated: a value that could
  break out of its place (a path, a YAML scalar, a URL, a DNS name) is refused before
  anything is written;
- :mod:`gateway.scaffold.project` — ``gateway.yaml``, ``.env.example`` and the personas;
- :mod:`gateway.scaffold.platforms` — each platform's setup page and the Slack app manifest;
- :mod:`gateway.scaffold.mail_dns` — the DKIM key and the DKIM, SPF, DMARC and MX records;
- :mod:`gateway.scaffold.writer` — the folder checks and the writing;
- :mod:`gateway.scaffold.command` — the command line, with prompts for what is missing.
"""
