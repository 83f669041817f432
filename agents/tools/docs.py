"""``search_docs``: find the passages of a persona's knowledge folder that fit a query.

The folder (``knowledge_dir`` in the persona file) holds Markdown or text files. Each file is
cut into sections at headings and blank-line paragraphs; a query scores sections by the
query words they contain (rarer words weigh more, as in TF-IDF), and the best few come back
with their file name, so the model can cite them. Read once when the persona is loaded.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agents.persona import Persona
from agents.tools.base import ToolContext, ToolResult

__all__ = ["Passage", "SearchDocsTool", "load_passages"]

_WORD = re.compile(r"[a-z0-9]+")
_HEADING = re.compile(r"^#{1,6}\s")
_STOP = frozenset(
    _WORD.findall(
        "a an and are as at be by can do does for from how i in is it my of on or the this to "
        "what when where which who why with you your"
    )
)
_MAX_PASSAGE_CHARS = 1200


def _words(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


@dataclass(frozen=True, slots=True)
class Passage:
    source: str  # file name relative to the knowledge folder
    title: str
    text: str
    words: Counter[str]


def _sections(text: str, default_title: str) -> list[tuple[str, str]]:
    """(title, paragraph) pairs: headings set the title, blank lines end a paragraph."""
    sections: list[tuple[str, str]] = []
    title, block = default_title, list[str]()
    for line in [*text.splitlines(), ""]:
        if _HEADING.match(line) or not line.strip():
            if block:
                sections.append((title, "\n".join(block).strip()))
                block = []
            if line.strip():
                title = line.lstrip("#").strip()
        else:
            block.append(line)
    return sections


def load_passages(folder: Path) -> list[Passage]:
    passages: list[Passage] = []
    files = sorted(p for p in folder.rglob("*") if p.suffix in (".md", ".txt") and p.is_file())
    for file in files:
        source = file.relative_to(folder).as_posix()
        for title, text in _sections(file.read_text(encoding="utf-8"), file.stem):
            words = Counter(_words(f"{title} {text}"))
            passages.append(Passage(source, title, text[:_MAX_PASSAGE_CHARS], words))
    return passages


class SearchDocsTool:
    """Options: ``results`` (default 3)."""

    name = "search_docs"
    description = (
        "Search this assistant's documentation. Returns the most relevant passages with the "
        "file they come from. Use before answering any question about the product."
    )
    parameters: Mapping[str, Any] = {
        "type": "object",
        "properties": {"query": {"type": "string", "minLength": 1, "maxLength": 500}},
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(self, passages: list[Passage], *, results: int = 3) -> None:
        self.passages = passages
        self.results = results
        documents = Counter(w for p in passages for w in p.words)
        total = max(1, len(passages))
        self._idf = {w: math.log(1 + total / n) for w, n in documents.items()}

    @classmethod
    def build(cls, persona: Persona, options: Mapping[str, Any]) -> SearchDocsTool:
        if persona.knowledge_dir is None or not persona.knowledge_dir.is_dir():
            raise KeyError(f"persona {persona.name!r}: search_docs needs a knowledge_dir folder")
        return cls(load_passages(persona.knowledge_dir), results=int(options.get("results", 3)))

    def search(self, query: str) -> list[Passage]:
        terms = set(_words(query))
        scored = []
        for n, passage in enumerate(self.passages):
            score = sum(
                self._idf.get(t, 0.0) * (1 + math.log(passage.words[t]))
                for t in terms
                if passage.words[t]
            )
            if score > 0:
                scored.append((-score, n, passage))
        scored.sort()
        return [p for _, _, p in scored[: self.results]]

    async def run(self, arguments: Mapping[str, Any], context: ToolContext) -> ToolResult:
        found = self.search(str(arguments["query"]))
        if not found:
            return ToolResult(content="No passage of the documentation matches that query.")
        return ToolResult(content="\n\n".join(f"[{p.source} — {p.title}]\n{p.text}" for p in found))
