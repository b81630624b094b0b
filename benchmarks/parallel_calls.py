"""Two independent computations in one request: does the agent call its tool for both in one
turn (parallel tool calls), and answer with both results? LangGraph's `create_react_agent` on the
bundled pair with a calculator tool; items drawn with a fixed seed.

    .venv/bin/python benchmarks/parallel_calls.py [ITEMS] [--target DIR] [--draft DIR]

Prints per item the calls of the first assistant turn and whether the final answer holds both
results, then the counts.
"""

from __future__ import annotations

import sys
import time

from langchain_core.messages import AIMessage
from langchain_core.tools import tool
from langgraph.prebuilt import create_react_agent

from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.tasks.base import calculator as evaluate
from specguard_integrations.tasks.base import two_computations


@tool
def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    return evaluate(expression)


def main(n: int, target: str | None = None, draft: str | None = None) -> None:
    from specguard_integrations import SpecGuardConfig
    from specguard_integrations.assets import DEFAULT_CONFIG
    from specguard_integrations.registry import resolve

    # the bundled pair, or another draft or target in its place (a training round's), with the
    # bundled config
    config = SpecGuardConfig.from_file(DEFAULT_CONFIG)
    if target is None and draft is None:
        model = ChatSpecGuard(device="cpu")
    else:
        model = ChatSpecGuard(
            draft=draft or resolve(None, "draft"),
            target=target or resolve(None, "target"),
            config=config,
        )
    both_in_one, answered, t0 = 0, 0, time.perf_counter()
    for question, r1, r2 in two_computations(n):
        agent = create_react_agent(model, [calculator])
        out = agent.invoke({"messages": [("user", question)]}, {"recursion_limit": 12})
        first = next(m for m in out["messages"] if isinstance(m, AIMessage))
        calls = [c["args"].get("expression") for c in first.tool_calls]
        final = str(out["messages"][-1].content)
        ok = r1 in final and r2 in final
        both_in_one += len(calls) >= 2
        answered += ok
        print(f"{question!r}: first turn calls {calls}; answer {final!r}; both results: {ok}")
    took = time.perf_counter() - t0
    print(f"\n{both_in_one}/{n} items: both calls in the first turn; {answered}/{n} answered with")
    print(f"both results; {took:.1f} s")


if __name__ == "__main__":
    args = sys.argv[1:]
    count = int(args[0]) if args and args[0].isdigit() else 6
    main(
        count,
        args[args.index("--target") + 1] if "--target" in args else None,
        args[args.index("--draft") + 1] if "--draft" in args else None,
    )
