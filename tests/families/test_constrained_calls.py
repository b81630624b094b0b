"""Forced tool calls valid by construction on tiny random-weight models of four families with
their real tokenizers (150k-vocabulary Qwen3 hermes, Llama-3.1 JSON, Mistral-style, DeepSeek-V3):
every call names a bound tool and its arguments validate against that tool's schema, sampled
(k > 1) and greedy, through `ChatSpecGuard`, the LlamaIndex LLM, and `specguard serve` called
with the official `openai` SDK and with langchain-openai."""

from __future__ import annotations

import json
import socket
import threading
import time

import httpx
import jsonschema
import pytest
from conftest import FAMILIES, build

from specguard_integrations import SpecGuardConfig

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 8},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
FLIGHT = {
    "type": "object",
    "properties": {"code": {"type": "string", "pattern": "^[A-Z]{2}[0-9]{2,3}$"}},
    "required": ["code"],
    "additionalProperties": False,
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "lookupFlight", "parameters": FLIGHT}},
]
SCHEMAS = {"get_weather": WEATHER, "lookupFlight": FLIGHT}
CALLING = [f for f in FAMILIES if f.name in ("qwen3", "llama3.1", "mistral", "deepseek_v3")]


@pytest.fixture(scope="module", params=CALLING, ids=[f.name for f in CALLING])
def engine(request):
    return build(request.param)


def _check(calls, forced=None):
    assert len(calls) >= 1, calls
    for call in calls:
        assert call["name"] in SCHEMAS and (forced is None or call["name"] == forced), call
        jsonschema.validate(call["args"], SCHEMAS[call["name"]])


@pytest.mark.parametrize("mode", ["sampled", "greedy"])
def test_chat_model_calls_are_valid_under_every_choice(engine, mode):
    from langchain_core.messages import HumanMessage

    from specguard_integrations.langchain import ChatSpecGuard

    base = SpecGuardConfig(k=3, temperature=0.9, top_p=0.95, tau=0.6, max_new_tokens=96)
    if mode == "greedy":
        base = base.merged(k=1, temperature=0.0)
    chat = ChatSpecGuard(engine=engine)
    n = 25 if mode == "sampled" else 2  # sampled: 50 calls per family (two choices)
    for choice, forced in (("required", None), ("lookupFlight", "lookupFlight")):
        bound = chat.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=False)
        for seed in range(n):
            cfg = base.merged(seed=seed)
            engine.config = cfg
            msg = bound.invoke([HumanMessage("Weather in Oslo, or flight LH123?")])
            assert not msg.invalid_tool_calls, msg.invalid_tool_calls
            _check(msg.tool_calls, forced)


def test_llama_index_structured_calls_are_valid(engine):
    from llama_index.core.base.llms.types import ChatMessage

    from specguard_integrations.llama_index import SpecGuardLLM

    engine.config = SpecGuardConfig(k=3, temperature=0.9, tau=0.6, max_new_tokens=96, seed=3)
    llm = SpecGuardLLM(engine=engine)
    for seed in range(4):
        engine.config = engine.config.merged(seed=seed)
        call = llm.chat(
            [ChatMessage(role="user", content="Flight LH123?")],
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
        )
        calls = [
            {"name": b.tool_name, "args": b.tool_kwargs}
            for b in call.message.blocks
            if type(b).__name__ == "ToolCallBlock"
        ]
        _check(calls)


@pytest.fixture(scope="module")
def server(engine):
    import uvicorn

    from specguard_integrations.server import Limits, create_app
    from specguard_integrations.server.served import SpecGuardServed

    engine.config = SpecGuardConfig(k=3, temperature=0.9, tau=0.6, max_new_tokens=96, seed=1)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(SpecGuardServed(engine, engine.config), Limits())
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(url + "/health", timeout=0.5)
            break
        except httpx.TransportError:
            time.sleep(0.05)
    yield url
    srv.should_exit = True
    thread.join(10)


def test_served_calls_and_parsed_json_with_the_openai_sdk(server):
    from openai import OpenAI
    from pydantic import BaseModel, Field

    class Forecast(BaseModel):
        city: str = Field(max_length=8)
        unit: str = Field(pattern="^(celsius|fahrenheit)$")

    client = OpenAI(base_url=server + "/v1", api_key="none")
    for seed in range(3):
        r = client.chat.completions.create(
            model="specguard",
            messages=[{"role": "user", "content": "Weather in Oslo?"}],
            tools=TOOLS,
            tool_choice="required",
            parallel_tool_calls=False,
            seed=seed,
        )
        calls = r.choices[0].message.tool_calls or []
        _check([{"name": c.function.name, "args": json.loads(c.function.arguments)} for c in calls])
        parsed = client.chat.completions.parse(
            model="specguard",
            messages=[{"role": "user", "content": "Weather in Oslo as JSON."}],
            response_format=Forecast,
            seed=seed,
        )
        assert isinstance(parsed.choices[0].message.parsed, Forecast)


def test_served_calls_with_langchain_openai(server):
    from langchain_openai import ChatOpenAI

    chat = ChatOpenAI(base_url=server + "/v1", api_key="none", model="specguard", max_retries=0)
    bound = chat.bind_tools(TOOLS, tool_choice="required", parallel_tool_calls=False)
    for seed in range(3):
        msg = bound.invoke("Flight LH123?", seed=seed)
        assert not msg.invalid_tool_calls
        _check(msg.tool_calls)


def test_without_the_grammar_these_models_never_write_a_valid_call(engine, monkeypatch):
    """The control: the same forced calls with constrained sampling switched off."""
    from langchain_core.messages import HumanMessage

    from specguard_integrations import chat as chat_module
    from specguard_integrations.langchain import ChatSpecGuard

    monkeypatch.setattr(chat_module, "grammar_available", lambda: False)
    bound = ChatSpecGuard(engine=engine).bind_tools(TOOLS, tool_choice="lookupFlight")
    valid = 0
    for seed in range(3):
        engine.config = SpecGuardConfig(k=3, temperature=0.9, tau=0.6, max_new_tokens=24, seed=seed)
        msg = bound.invoke([HumanMessage("Flight LH123?")])
        try:
            _check(msg.tool_calls, "lookupFlight")
            valid += 1
        except (AssertionError, jsonschema.ValidationError):
            pass
    assert valid == 0


def test_auto_takes_text_or_one_valid_call_after_the_opener_token(engine):
    """tool_choice="auto": the opener, a special or added token in Qwen3 and DeepSeek-V3, is
    named in the grammar by its id; free text cannot spell it out; the text twin checks the
    same language on text. Sampled replies are text or valid calls, never markup."""
    from langchain_core.messages import HumanMessage

    from specguard_integrations.backends.local.grammar import Matcher
    from specguard_integrations.chat import prepare_chat
    from specguard_integrations.constraint.text import TextChecker
    from specguard_integrations.langchain import ChatSpecGuard

    lm = engine.target.lm
    msgs = [{"role": "user", "content": "Weather in Oslo?"}]
    call = prepare_chat(lm, msgs, tools=TOOLS, tool_choice="auto", parallel_tool_calls=False)
    opener = call.fmt.opener
    if not opener:  # llama3_json writes a bare object: parsed as written, no grammar
        assert call.constraint is None
        return
    assert call.constraint is not None
    token = opener in lm.tokenizer.get_added_vocab()
    assert (call.constraint.text_source is not None) == token
    assert ("<[" in call.constraint.source) == token
    args = {"city": "Oslo", "unit": "celsius"}
    fmt = call.fmt
    good = f"Let me look. {fmt.name_prefix}get_weather{fmt.args_prefix}{json.dumps(args)}"
    good += fmt.args_suffix + ("" if call.end else fmt.end)  # plain end markers: the grammar's
    matcher = Matcher.start(lm, call.constraint)
    matcher.follow(lm.encode_continuation(good))
    assert matcher.accepting
    checker = TextChecker(call.constraint)
    assert checker.follow(good) is None and checker.complete
    if token:  # the opener token's text spelled out in ordinary tokens is not text either
        half = len(opener) // 2
        spelled = lm.encode_continuation("Hi " + opener[:half])
        spelled += lm.encode_continuation(opener[half:])
        assert opener not in lm.tokenizer.convert_ids_to_tokens(spelled)
        with pytest.raises(ValueError, match="constraint"):
            Matcher.start(lm, call.constraint).follow(spelled)
    bound = ChatSpecGuard(engine=engine).bind_tools(
        TOOLS, tool_choice="auto", parallel_tool_calls=False
    )
    for seed in range(6):
        engine.config = SpecGuardConfig(k=3, temperature=1.0, tau=0.6, max_new_tokens=48, seed=seed)
        msg = bound.invoke([HumanMessage("Weather in Oslo, or flight LH123?")])
        assert not msg.invalid_tool_calls, msg.invalid_tool_calls
        if msg.tool_calls:
            _check(msg.tool_calls)
        assert opener not in str(msg.content)


def test_every_structured_output_method_parses(engine):
    """`with_structured_output` by each of LangChain's methods, a pydantic class and a JSON
    schema: each result parses and validates; json_mode without a schema parses or names the
    token budget that cut it."""
    from pydantic import BaseModel, Field

    from specguard_integrations.langchain import ChatSpecGuard

    class Flight(BaseModel):
        """A flight to look up."""

        code: str = Field(pattern="^[A-Z]{2}[0-9]{2,3}$")

    engine.config = SpecGuardConfig(k=3, temperature=0.9, tau=0.6, max_new_tokens=64, seed=5)
    chat = ChatSpecGuard(engine=engine)
    for method in ("function_calling", "json_schema", "json_mode"):
        # strict: no properties beyond the schema's (a random model would wander into them)
        flight = chat.with_structured_output(Flight, method=method, strict=True)
        flight = flight.invoke("Flight LH123?")
        assert isinstance(flight, Flight), (method, flight)
        raw = chat.with_structured_output(FLIGHT | {"title": "Flight"}, method=method)
        out = raw.invoke("Flight LH123?")
        jsonschema.validate(out, FLIGHT)
    # json_mode without a schema: any object, so a random model may write one string key until
    # the budget ends; the reply is then a parse error that names the budget, never a half object
    anything = chat.with_structured_output(None, method="json_mode", include_raw=True)
    for seed in range(3):
        engine.config = SpecGuardConfig(k=3, temperature=0.9, tau=0.6, max_new_tokens=24, seed=seed)
        out = anything.invoke("Flight LH123?")
        if out["parsing_error"] is None:
            assert isinstance(out["parsed"], dict), out
            continue
        assert out["parsed"] is None and "token budget" in str(out["parsing_error"]), out
        assert out["raw"].response_metadata["finish_reason"] == "length", out
        assert not out["raw"].tool_calls and out["raw"].invalid_tool_calls, out
    with pytest.raises(ValueError, match="needs a schema"):
        chat.with_structured_output(None, method="json_schema")
