"""Tools an LLM agent may call: the ``Tool`` protocol, the registry and the built-ins.

A persona lists the tools it may use (``tools: [search_docs, handoff]``); nothing else is
ever offered to the model, and a call to anything else is refused (deny-first). Per-tool
settings live in the agent's options under ``tool_options.<name>``.
"""

from agents.tools.base import Tool, ToolContext, ToolResult
from agents.tools.registry import TOOLS, build_tools

__all__ = ["TOOLS", "Tool", "ToolContext", "ToolResult", "build_tools"]
