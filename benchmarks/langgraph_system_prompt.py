"""LangGraph's `create_react_agent` on the bundled pair with a system prompt and a PascalCase
tool name, with and without the `tool_choice="auto"` grammar: how many held-out tools items end
with the right answer, and which tools were called.

    .venv/bin/python benchmarks/langgraph_system_prompt.py [on] [off]
"""

from __future__ import annotations

import sys
import time

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

import specguard_integrations.chat as chat
from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.tasks import make_split
from specguard_integrations.tasks.base import calculator as evaluate

SYSTEM = "You are a careful assistant. Use the Calculator tool for arithmetic."


@tool("Calculator")
def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    try:
        return evaluate(expression)
    except ValueError as err:
        return f"error: {err}"


def main(modes: list[str]) -> None:
    items = make_split("tools", "test", 6)
    model = ChatSpecGuard(device="cpu")
    for mode in modes:
        if mode == "off":  # no grammar: the reply is parsed as written
            chat.grammar_available = lambda: False  # type: ignore[assignment]
        solved, t0 = 0, time.perf_counter()
        for item in items:
            agent = create_react_agent(model, [calculator], prompt=SYSTEM)
            out = agent.invoke({"messages": [("user", item.prompt)]}, {"recursion_limit": 12})
            msgs = out["messages"]
            calls = [c["name"] for m in msgs if isinstance(m, AIMessage) for c in m.tool_calls]
            final = msgs[-1]
            ok = isinstance(final, AIMessage) and not final.tool_calls
            ok = ok and item.answer in str(final.content)
            solved += ok
            print(mode, ok, calls, repr(str(final.content)[-60:]))
        print(f"{mode}: {solved}/{len(items)} right, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main(sys.argv[1:] or ["on", "off"])
