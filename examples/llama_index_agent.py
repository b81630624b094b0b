"""LlamaIndex agents on the bundled pair, using a real calculator tool.

`FunctionAgent` calls the tool through function calling; `ReActAgent` writes
`Thought/Action/Action Input` text that LlamaIndex's own parser reads. Its default system header
(about 1,400 tokens here) does not fit the pair's 512-token window, so the ReAct agent gets the
package's compact header (`react_formatter()`), the one the pair was trained on.

    .venv/bin/python examples/llama_index_agent.py
"""

import asyncio

from llama_index.core.agent.workflow import FunctionAgent, ReActAgent
from llama_index.core.tools import FunctionTool

from specguard_integrations.llama_index import SpecGuardLLM, react_formatter
from specguard_integrations.tasks.base import calculator as evaluate


def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    return evaluate(expression)


def agent(kind: str = "function", llm: SpecGuardLLM | None = None):
    tools = [FunctionTool.from_defaults(calculator)]
    llm = llm or SpecGuardLLM()
    if kind == "react":
        return ReActAgent(tools=tools, llm=llm, formatter=react_formatter())
    return FunctionAgent(tools=tools, llm=llm)


async def solve(question: str, kind: str = "function"):
    """The agent's output (`str()` is the answer; `.tool_calls` the tools it ran)."""
    return await agent(kind).run(user_msg=question)


def main() -> None:
    for kind in ("function", "react"):
        out = asyncio.run(solve("What is 37 * 4 + 15?", kind))
        calls = [(c.tool_name, c.tool_kwargs, c.tool_output.content) for c in out.tool_calls]
        print(f"{kind}: {str(out).strip()}  tools: {calls}")


if __name__ == "__main__":
    main()
