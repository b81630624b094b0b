"""A LangChain agent on the bundled offline pair: SpecGuard decides every step, a real
calculator tool does the arithmetic.

    .venv/bin/python examples/langchain_agent.py
"""

from langchain.agents import create_agent
from langchain_core.tools import tool

from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.tasks.base import calculator as evaluate


@tool
def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    return evaluate(expression)


def main() -> None:
    model = ChatSpecGuard()  # the bundled pair; pass draft=/target= for any HF models
    agent = create_agent(model, [calculator])
    state = agent.invoke({"messages": [("user", "Question: What is 37 * 4 + 15?\n")]})
    for message in state["messages"]:
        calls = getattr(message, "tool_calls", None)
        print(f"{message.type:>9}: {message.content!r}" + (f" calls {calls}" if calls else ""))
    last = state["messages"][-1]
    print("steps of the last answer:")
    for step in last.response_metadata["specguard_steps"]:
        print(
            f"  {step['source']:>6} fused={step['fused']:.3f} tau={step['threshold']}"
            f" {step['decision']:>6} {step['text']!r}"
        )


if __name__ == "__main__":
    main()
