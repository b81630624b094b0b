"""A LlamaIndex FunctionAgent on the bundled pair, using a real calculator tool.

.venv/bin/python examples/llama_index_agent.py
"""

import asyncio

from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.tools import FunctionTool

from specguard_integrations.llama_index import SpecGuardLLM
from specguard_integrations.tasks.base import calculator as evaluate


def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    return evaluate(expression)


async def solve(question: str) -> str:
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(calculator)], llm=SpecGuardLLM())
    return str(await agent.run(user_msg=question))


def main() -> None:
    print(asyncio.run(solve("Question: What is 37 * 4 + 15?\n")))


if __name__ == "__main__":
    main()
