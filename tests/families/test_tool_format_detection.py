"""Tool-call format detection on a tokenizer's OWN chat template: DeepSeek-V3's (as its tokenizer
ships it, not vLLM's rewrite in `tests/fixtures/chat_templates`) writes calls only for an
assistant turn whose content is None, with the arguments as a JSON string."""

from __future__ import annotations

import json

import pytest
from fetch_assets import npm_tokenizer  # tests/ is on sys.path (tests/families/conftest.py)

from specguard_integrations.tools import DeepSeekV3
from specguard_integrations.tools.templates import detect

OPEN, CLOSE = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
BEGIN, SEP, END = "<｜tool▁call▁begin｜>", "<｜tool▁sep｜>", "<｜tool▁call▁end｜>"
CALLS = [("add", {"a": 12, "b": 30}), ("mul", {"a": 2, "b": 21})]


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(npm_tokenizer("deepseek_v3"))
    own = json.loads((npm_tokenizer("deepseek_v3") / "tokenizer_config.json").read_text())
    assert tok.chat_template == own["chat_template"]  # the tokenizer's own, untouched
    assert "message['content'] is none" in tok.chat_template
    return tok


def test_deepseek_v3_own_template_is_detected(tok):
    fmt = detect(tok)
    assert type(fmt) is DeepSeekV3
    assert fmt.forced_prefix("add") == f"{OPEN}{BEGIN}function{SEP}add\n```json\n"


def _template_reply(tok) -> str:
    """The assistant turn DeepSeek-V3's own template writes for two calls (it closes the block
    only after a second call), as the model is trained to write it."""
    from transformers.utils.chat_template_utils import render_jinja_template

    calls = [
        {"type": "function", "id": f"call_{i}", "function": {"name": n, "arguments": json.dumps(a)}}
        for i, (n, a) in enumerate(CALLS)
    ]
    msgs = [
        {"role": "user", "content": "What is 12 + 30 and 2 * 21?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
    ]
    (text,), _ = render_jinja_template(
        conversations=[msgs], chat_template=tok.chat_template, **tok.special_tokens_map
    )
    return text.split("<｜Assistant｜>", 1)[1].removesuffix(tok.eos_token)


def test_a_reply_in_the_detected_format_gives_the_calls_back(tok):
    fmt = detect(tok)
    reply = _template_reply(tok)
    assert reply.startswith(fmt.forced_prefix("add")) and reply.endswith(CLOSE)
    parsed = fmt.parse(reply)
    assert [(c["name"], c["args"]) for c in parsed.tool_calls] == CALLS
    assert parsed.invalid_tool_calls == [] and parsed.content == ""
    # a forced call as the engine continues it: the prefix, then what the model writes
    forced = fmt.forced_prefix("add") + json.dumps(CALLS[0][1]) + f"\n```{END}{CLOSE}"
    (call,) = fmt.parse(forced).tool_calls
    assert (call["name"], call["args"]) == CALLS[0]


def test_a_forced_call_through_the_own_template(tok):
    from specguard_integrations import SpecGuard, SpecGuardConfig
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.testing import tiny_family_model

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    draft = LocalCausalLM(tiny_family_model("deepseek_v3", tok, seed=1), tok, name="ds-d")
    target = LocalCausalLM(tiny_family_model("deepseek_v3", tok, seed=2), tok, name="ds-t")
    cfg = SpecGuardConfig.greedy(tau=0.5, max_step_tokens=10, max_new_tokens=30)
    chat = ChatSpecGuard(engine=SpecGuard(draft, target, cfg))
    msg = chat.bind_tools([add], tool_choice="add").invoke("Question: What is 12 + 30?\n")
    calls = msg.tool_calls + msg.invalid_tool_calls
    assert calls and calls[0]["name"] == "add", msg


def test_an_agents_second_turn_renders_through_the_own_template(tok):
    """After a call and its result, the conversation is rendered as DeepSeek-V3's own template
    writes it (the assistant turn with content None and arguments as JSON text, the result in
    its tool-output block), not as text turns, and the agent's second turn is answered."""
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    from specguard_integrations import SpecGuard, SpecGuardConfig
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.chat import prepare_chat
    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.langchain._common import to_chat_dicts
    from specguard_integrations.testing import tiny_family_model

    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    history = [
        HumanMessage("What is 12 + 30?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 12, "b": 30}, "id": "call_1"}]),
        ToolMessage("42", tool_call_id="call_1"),
    ]
    draft = LocalCausalLM(tiny_family_model("deepseek_v3", tok, seed=1), tok, name="ds-d")
    target = LocalCausalLM(tiny_family_model("deepseek_v3", tok, seed=2), tok, name="ds-t")
    tool = {"type": "function", "function": {"name": "add", "parameters": {"type": "object"}}}
    call = prepare_chat(target, to_chat_dicts(history), tools=[tool])
    want = (
        f"<｜Assistant｜>{OPEN}{BEGIN}function{SEP}add\n```json\n"
        + json.dumps({"a": 12, "b": 30})
        + f"\n```{END}"
    )
    assert want in call.prompt, call.prompt
    assert "<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>42<｜tool▁output▁end｜>" in call.prompt
    assert "Tool result (" not in call.prompt  # not the text-turn fallback
    cfg = SpecGuardConfig.greedy(tau=0.5, max_step_tokens=10, max_new_tokens=20)
    chat = ChatSpecGuard(engine=SpecGuard(draft, target, cfg)).bind_tools([add])
    msg = chat.invoke(history)
    assert msg.response_metadata["specguard_steps"], msg
