"""What a ``flowbiz demo`` scene is (:class:`Scene`) and the transcript it prints.

Scenes live beside what they show (``connectors/<kind>/demo.py``, the example agents in
``agents/examples/scene.py``) and :mod:`gateway.demo` plays them; both import this module,
which imports nothing of the project.
"""

from __future__ import annotations

from typing import Any, Protocol, TextIO

__all__ = ["Scene", "Transcript"]


class Transcript:
    def __init__(self, out: TextIO) -> None:
        self.out = out

    def heading(self, title: str) -> None:
        print(f"\n== {title} ==", file=self.out)

    def customer(self, who: str, text: str) -> None:
        print(f"  {who:>18} > {text}", file=self.out)

    def bot(self, who: str, text: str, note: str = "") -> None:
        lines = text.splitlines() or [""]
        print(f"  {who:>18} < {lines[0]}", file=self.out)
        for line in lines[1:]:
            print(f"  {'':>18}   {line}", file=self.out)
        if note:
            print(f"  {'':>18}   [{note}]", file=self.out)

    def note(self, text: str) -> None:
        print(f"  {'':>18}   ({text})", file=self.out)


class Scene(Protocol):
    title: str

    async def prepare(self, config: dict[str, Any]) -> None:
        """Start this platform's emulator and add/patch its blocks in the config data."""

    async def play(self, gateway_url: str, transcript: Transcript) -> bool:
        """Send traffic through the running gateway; True when every reply arrived."""
        ...

    async def close(self) -> None: ...
