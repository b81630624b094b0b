"""Agents and a query engine on the bundled pair, with the real tool and real retrieval."""

import asyncio
import importlib.util
import re
import sys
from pathlib import Path

import pytest
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.tools import tool

from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.tasks import make_split
from specguard_integrations.tasks.base import calculator as evaluate

ITEMS = make_split("tools", "test", 3)


def gold_expressions(item):
    return [re.search(r"Action Input: ([^\n]*)", s).group(1) for s in item.steps[:-1]]


@tool
def calculator(expression: str) -> str:
    """Evaluate a + b, a - b or a * b with integers."""
    return evaluate(expression)


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.prompt.strip())
def test_langchain_agent_uses_the_tool_and_answers(item):
    agent = create_agent(ChatSpecGuard(device="cpu"), [calculator])
    state = agent.invoke({"messages": [("user", item.prompt)]})
    msgs = state["messages"]
    calls = [c for m in msgs if isinstance(m, AIMessage) for c in m.tool_calls]
    results = [m.content for m in msgs if isinstance(m, ToolMessage)]
    assert [c["args"] for c in calls] == [{"expression": e} for e in gold_expressions(item)]
    assert results == [evaluate(e) for e in gold_expressions(item)]
    final = msgs[-1]
    assert isinstance(final, AIMessage) and not final.tool_calls
    assert item.answer in final.content
    assert final.response_metadata["specguard_steps"]


def _example(name):
    path = Path(__file__).resolve().parents[2] / "examples" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("item", ITEMS, ids=lambda i: i.prompt.strip())
def test_llama_index_function_agent_uses_the_tool_and_answers(item):
    example = _example("llama_index_agent")
    answer = asyncio.run(example.solve(item.prompt))
    assert item.answer in answer


def test_llama_index_query_engine_answers_a_two_hop_question():
    from specguard_integrations.llama_index import SpecGuardLLM

    example = _example("llama_index_query_engine")
    engine = example.build(SpecGuardLLM(device="cpu"))
    response = engine.query("Who is the friend of the friend of Ann?")
    assert "Eve" in str(response)
    assert any("Ann's friend is Bob" in n.node.get_content() for n in response.source_nodes)
