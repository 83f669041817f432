"""Example bots: an FAQ bot behind a signed webhook, a docs assistant and an on-call helper.

- ``faq_bot.py`` — a tiny bot server in plain aiohttp that verifies the gateway's signature
  without importing the gateway (what a bot in any language does); persona ``faq``.
- ``personas/docs-assistant.yaml`` — the LLM agent with ``search_docs`` over
  ``knowledge/docs``.
- ``personas/oncall.yaml`` — the LLM agent with the guarded ``run_command`` tool.
- ``responders.py`` — scripted "models" for the OpenAI emulator, so both LLM examples run
  offline (demo and tests).
"""

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent
PERSONAS_DIR = EXAMPLES_DIR / "personas"

__all__ = ["EXAMPLES_DIR", "PERSONAS_DIR"]
