"""LangGraph's `create_react_agent` on the bundled pair as agents are written: with and without a
system prompt, with the tool named in PascalCase, snake_case, camelCase or lower case, and with
the `tool_choice="auto"` grammar on and off. Prints, per setup, how many held-out tools items
end with the right answer and no pending call.

    .venv/bin/python benchmarks/langgraph_system_prompt.py [ITEMS] [on] [off]
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


def named(name: str):
    @tool(name)
    def calculator(expression: str) -> str:
        """Evaluate a + b, a - b or a * b with integers."""
        try:
            return evaluate(expression)
        except ValueError as err:
            return f"error: {err}"

    return calculator


SETUPS = [
    ("system prompt, Calculator", "Calculator", SYSTEM),
    ("no system prompt, calculator", "calculator", None),
    ("system prompt, get_result", "get_result", "Be precise. Use get_result."),
    ("no system prompt, computeExpression", "computeExpression", None),
]


def main(n: int, modes: list[str]) -> None:
    items = make_split("tools", "test", n)
    model = ChatSpecGuard(device="cpu")
    for mode in modes:
        if mode == "off":  # no grammar: the reply is parsed as written
            chat.grammar_available = lambda: False  # type: ignore[assignment]
        for label, name, prompt in SETUPS:
            solved, t0 = 0, time.perf_counter()
            for item in items:
                agent = create_react_agent(model, [named(name)], prompt=prompt)
                out = agent.invoke({"messages": [("user", item.prompt)]}, {"recursion_limit": 12})
                final = out["messages"][-1]
                ok = isinstance(final, AIMessage) and not final.tool_calls
                solved += ok and item.answer in str(final.content)
            took = time.perf_counter() - t0
            print(f"grammar {mode}, {label}: {solved}/{len(items)} right, {took:.1f} s", flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args.pop(0)) if args and args[0].isdigit() else 10
    main(count, args or ["on", "off"])
