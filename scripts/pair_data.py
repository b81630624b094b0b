"""What the bundled pair is trained on: the synthetic task conversations (plain, chat, tool
calls in text and through the chat template, ReAct), the byte-level tokenizer with its chat
template, and the examples of each training mix (`train_pair.py` runs the training)."""

from __future__ import annotations

import functools
import json
import random
from pathlib import Path

from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.testing import bundled_style

SPECIALS = [
    "<pad>",
    "<s>",
    "</s>",
    "<unk>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
]
CALCULATOR = {
    "type": "function",
    "function": {
        "name": "calculator",
        "description": "Evaluate a + b, a - b or a * b with integers.",
        "parameters": {
            "type": "object",
            "properties": {"expression": {"type": "string"}},
            "required": ["expression"],
        },
    },
}


def tool_call_conversation(item, name: str = "calculator") -> list[dict]:
    """The tools family in chat tool-call form: calls, real tool results, then the answer."""
    import re

    msgs: list[dict] = [{"role": "user", "content": item.prompt}]
    for i, step in enumerate(item.steps[:-1]):
        expr = re.search(r"Action Input: ([^\n]*)", step).group(1)
        call = {
            "type": "function",
            "function": {"name": name, "arguments": {"expression": expr}},
        }
        msgs.append({"role": "assistant", "content": "", "tool_calls": [call]})
        msgs.append({"role": "tool", "content": item.observations[i].split(": ", 1)[1].strip()})
    msgs.append({"role": "assistant", "content": f"Answer: {item.answer}"})
    return msgs


OPS = [("+", "plus"), ("-", "minus"), ("*", "times")]
TWO_QUESTIONS = [
    *("What is {e1}, and what is {e2}?", "Compute {w1} and {w2}.", "What are {e1} and {e2}?"),
    *("I need two results: {e1} and {e2}.", "Work out {w1}, then {w2}."),
    "Calculate both {e1} and {e2}.",
]


def calculator_name(rng: random.Random, name_case: float) -> str:
    """The calculator's name: `name_case` of the time another spelling of it, else its own."""
    return cased(rng, rng.choice(CALCULATOR_NAMES)) if rng.random() < name_case else "calculator"


def parallel_call_conversation(rng: random.Random, name: str = "calculator") -> list[dict]:
    """Two independent computations asked for together: both calls in one assistant turn (as
    an agent's parallel tool calls), both results, then an answer with both."""
    from specguard_integrations.tasks.base import calculator as evaluate

    exprs, words = [], []
    for _ in range(2):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        sym, word = rng.choice(OPS)
        exprs.append(f"{a} {sym} {b}")
        words.append(f"{a} {word} {b}")
    question = rng.choice(TWO_QUESTIONS).format(e1=exprs[0], e2=exprs[1], w1=words[0], w2=words[1])
    results = [evaluate(e) for e in exprs]
    calls = [
        {"type": "function", "function": {"name": name, "arguments": {"expression": e}}}
        for e in exprs
    ]
    return [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "", "tool_calls": calls},
        {"role": "tool", "content": results[0]},
        {"role": "tool", "content": results[1]},
        {"role": "assistant", "content": f"Answer: {results[0]} and {results[1]}"},
    ]


ROLES = ["an assistant", "a helper", "an agent", "a math tutor", "a bot"]
SYSTEM_OPENERS = [
    "You are {role}.",
    "You are a {adj} {role_noun}.",
    "Be {adj}.",
    "",
]
SYSTEM_RULES = [
    "Use the {tool} tool when it helps.",
    "Use {tool} for arithmetic.",
    "Call the tools you are given.",
    "Answer briefly.",
    "Think step by step.",
    "Always check your work.",
    "",
]
ADJECTIVES = ["helpful", "precise", "friendly", "concise", "smart", "careful", "patient"]


def system_turn(rng: random.Random, tool: str) -> dict:
    """A system message as agents send them next to tools (LangGraph's `prompt=`, LlamaIndex's
    `system_prompt`): a role line and/or a rule, sometimes naming the tool."""
    parts = [
        rng.choice(SYSTEM_OPENERS).format(
            adj=rng.choice(ADJECTIVES), role=(role := rng.choice(ROLES)), role_noun=role[2:].strip()
        ),
        *(r.format(tool=tool) for r in rng.sample(SYSTEM_RULES, rng.choice((1, 1, 2)))),
    ]
    text = " ".join(p for p in parts if p) or "You are a helpful assistant."
    return {"role": "system", "content": text}


def cased(rng: random.Random, words: list[str]) -> str:
    """A tool name in one of the spellings tool lists use: snake_case, PascalCase (pydantic
    classes, `@tool("Calculator")`), camelCase (`lookupFlight`), or all lower-case run
    together."""
    style = rng.choice(("snake", "pascal", "camel", "lower"))
    if style == "snake":
        return "_".join(words)
    if style == "pascal":
        return "".join(w.capitalize() for w in words)
    if style == "camel":
        return words[0] + "".join(w.capitalize() for w in words[1:])
    return "".join(words)


# names agents give the calculator, in words: spelled in any case, and of other token lengths,
# so that copying the tool's results does not lean on where they sit
CALCULATOR_NAMES = [
    ["calculator"],
    ["calculator"],
    ["calc"],
    ["calculator", "tool"],
    ["math", "tool"],
    ["evaluate"],
    ["compute", "expression"],
    ["arithmetic"],
    ["simple", "calculator"],
]


def calculator_tool(name: str) -> dict:
    return {**CALCULATOR, "function": {**CALCULATOR["function"], "name": name}}


SIZES = {
    "target": dict(
        hidden_size=256, intermediate_size=688, num_hidden_layers=8, num_attention_heads=8
    ),
    "draft": dict(
        hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4
    ),
}


def build_tokenizer(out: Path, vocab: int = 512) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    corpus = []
    for fam in FAMILIES:
        for item in make_split(fam, "train", 3000, seed=99):
            corpus.append(item.prompt + item.target_text)
            if fam == "tools":
                msgs = tool_call_conversation(item)
                corpus.append(json.dumps(msgs[1]["tool_calls"][0]["function"]) + "</tool_call>")
                corpus.append("<tool_call>" + json.dumps({"name": "calculator"}))
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus, trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = bundled_style(tok)
    fast.save_pretrained(out / "tokenizer")


TOOL_WORDS = [
    "magic",
    "get",
    "weather",
    "lookup",
    "find",
    "compute",
    "search",
    "fetch",
    "convert",
    "count",
    "score",
    "city",
    "user",
]
PARAMS = [
    "input",
    "x",
    "n",
    "value",
    "city",
    "location",
    "query",
    "name",
    "a",
    "b",
    "item",
    "topic",
    "setup",
    "punchline",
    "text",
]
PLACES = ["San Francisco, CA", "Paris", "New York", "Tokyo", "Berlin", "Lima", "Oslo", "Cairo"]


def generic_tool_conversation(
    rng: random.Random, made_up_params: float = 0.0, name_case: float = 0.0
) -> tuple[list[dict], list[dict]]:
    """A made-up tool and a question that asks for it: copying names and values from the
    tool list and the question, so any bound tool can be called. Then the tool's result and an
    answer that uses it.

    With probability `made_up_params` the parameter names are made up too (so they can only be
    copied from the tool list, not recalled), and half of those questions name no values, so
    every parameter of the schema has to be filled in. With probability `name_case` the tool's
    name is spelled in another case (`GetWeather`, `lookupFlight`)."""
    words = rng.sample(TOOL_WORDS, rng.choice((1, 2, 2, 3)))
    if rng.random() < 0.3:
        words = ["magic", "function"] if rng.random() < 0.5 else [*words, "function"]
    name = cased(rng, words) if rng.random() < name_case else "_".join(words)
    made_up = rng.random() < made_up_params
    if made_up:
        params = list(
            dict.fromkeys(
                "_".join(rng.sample(TOOL_WORDS + PARAMS, rng.choice((1, 2))))
                for _ in range(rng.choice((1, 2, 2, 3)))
            )
        )
    else:
        params = rng.sample(PARAMS, rng.choice((0, 1, 1, 1, 2)))
    args: dict = {}
    for p in params:
        if p in ("city", "location"):
            args[p] = rng.choice(PLACES)
        elif p in ("setup", "punchline", "text", "topic", "query", "name", "item") or (
            made_up and rng.random() < 0.5
        ):
            args[p] = " ".join(rng.sample(TOOL_WORDS, rng.randint(1, 3)))
        else:
            args[p] = rng.randint(0, 99)
    shown = ", ".join(json.dumps(v) if isinstance(v, str) else str(v) for v in args.values())
    question = rng.choice(
        [
            f"What is the value of {name}({shown})? Use the tool.",
            f"Call {name} with {shown}.",
            f"Use {name} on {shown}.",
        ]
    )
    if not params:
        question = f"What is the value of {name}()? Use the tool."
    elif made_up and rng.random() < 0.5:
        question = rng.choice(
            [f"Use {name}.", f"Call {name}.", f"Tell me about {args[params[0]]}."]
        )
    if params == ["city"] or params == ["location"]:
        question = rng.choice([question, f"What is the weather in {args[params[0]]}?"])
    props = {p: {"type": "integer" if isinstance(args[p], int) else "string"} for p in params}
    tool = {
        "type": "function",
        "function": {"name": name, "parameters": {"type": "object", "properties": props}},
    }
    result = (
        str(rng.randint(0, 999))
        if rng.random() < 0.6
        else rng.choice(["sunny", "ok", "done", "It's sunny."])
    )
    call = {"type": "function", "function": {"name": name, "arguments": args}}
    msgs = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": result},
        {"role": "assistant", "content": f"The result is {result}."},
    ]
    return msgs, [tool]


@functools.cache
def _react_calculator():
    """The calculator as a LlamaIndex tool, as the examples define it (its description and
    argument schema are what the ReAct header shows)."""
    from llama_index.core.tools import FunctionTool

    def calculator(expression: str) -> str:
        """Evaluate a + b, a - b or a * b with integers."""
        return expression

    return FunctionTool.from_defaults(calculator)


def react_chat_conversation(item, rng: random.Random) -> list[dict]:
    """The tools family as LlamaIndex's `ReActAgent` renders it with the compact header
    (`specguard_integrations.llama_index.react`): system header with the tool description,
    the question, then assistant steps and `Observation:` user turns, ending in `Answer:`."""
    import re

    from llama_index.core.agent.react.types import (
        ActionReasoningStep,
        ObservationReasoningStep,
        ResponseReasoningStep,
    )
    from llama_index.core.base.llms.types import ChatMessage

    from specguard_integrations.llama_index.llms import to_chat_dicts
    from specguard_integrations.llama_index.react import react_formatter

    question = item.prompt.strip()
    if rng.random() < 0.5:
        question = question.removeprefix("Question: ")
    reasoning: list = []
    for i, step in enumerate(item.steps[:-1]):
        m = re.fullmatch(r"Thought: ([^\n]*)\nAction: (\w+)\nAction Input: ([^\n]*)\n", step)
        thought, action, expr = m.groups()
        reasoning.append(
            ActionReasoningStep(thought=thought, action=action, action_input={"expression": expr})
        )
        obs = item.observations[i].split(": ", 1)[1].strip()
        reasoning.append(ObservationReasoningStep(observation=obs))
    reasoning.append(ResponseReasoningStep(thought="done", response=item.answer))
    msgs = react_formatter().format(
        [_react_calculator()], [ChatMessage(role="user", content=question)], reasoning
    )
    return to_chat_dicts(msgs)


def curriculum_multihop(n: int, seed: int, spec: str) -> list:
    """Multi-hop train items with hops and distractors drawn from `spec`, "H1-H2:D1-D2" (the
    held-out shape is 2-3 hops among 4 distractors, whose prompts are excluded). The lookup is
    the same at every size: few facts make its gradient clearer, more hops give more lookups
    per sequence."""
    from specguard_integrations.tasks.base import held_out_prompts, multihop_item

    (h1, h2), (d1, d2) = (map(int, part.split("-")) for part in spec.split(":"))
    held = held_out_prompts("multihop")
    rng = random.Random(f"curriculum:{seed}")
    out: list = []
    while len(out) < n:
        item = multihop_item(rng, rng.randint(h1, h2), rng.randint(d1, d2))
        if item.prompt not in held:
            out.append(item)
    return out


def examples(
    tok,
    n_per_family: int,
    seed: int,
    weights: dict[str, float] | None = None,
    react_share: float = 0.0,
    curriculum: str = "",
    generic: float = 0.5,
    made_up_params: float = 0.0,
    system_share: float = 0.0,
    name_case: float = 0.0,
    tool_call_share: float = 0.0,
    parallel: float = 0.0,
) -> list[tuple[list[int], int]]:
    """(ids, completion start) pairs: plain and chat renderings of every train item.

    `system_share` of the chat renderings (tool calls, made-up tools, plain chats) start with a
    system turn; `name_case` of the tool conversations spell the tool's name in another case;
    `tool_call_share` of the tools items are rendered as chat tool calls first; `parallel` (a
    share of `n_per_family`) conversations ask for two computations and call for both in one
    turn."""
    out = []
    rng = random.Random(seed)

    def chat(msgs: list[dict], tools: list[dict] | None, tool: str) -> tuple[list[int], int]:
        """The conversation rendered through the chat template: the prompt is everything up to
        the first assistant turn, the completion the rest."""
        if rng.random() < system_share:
            msgs = [system_turn(rng, tool), *msgs]
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        head = tok.apply_chat_template(
            msgs[:first], tools=tools, tokenize=False, add_generation_prompt=True
        )
        full = tok.apply_chat_template(msgs, tools=tools, tokenize=False)
        prompt = tok(head, add_special_tokens=False)["input_ids"]
        return prompt + tok(full[len(head) :], add_special_tokens=False)["input_ids"], len(prompt)

    react_from = 0.6 + react_share
    for fam in FAMILIES:
        n = int(n_per_family * (weights or {}).get(fam, 1.0))
        items = (
            curriculum_multihop(n, seed, curriculum)
            if fam == "multihop" and curriculum
            else make_split(fam, "train", n, seed=seed)
        )
        for item in items:
            roll = rng.random()
            if fam == "tools" and rng.random() < tool_call_share:
                roll = 0.8  # a chat tool-call conversation
            if roll < 0.6:
                prompt = tok(item.prompt)["input_ids"]
                comp = tok(item.target_text + "</s>", add_special_tokens=False)["input_ids"]
            elif fam == "tools" and roll < react_from:
                msgs = react_chat_conversation(item, rng)
                head = tok.apply_chat_template(msgs[:2], tokenize=False, add_generation_prompt=True)
                full = tok.apply_chat_template(msgs, tokenize=False)
                prompt = tok(head, add_special_tokens=False)["input_ids"]
                comp = tok(full[len(head) :], add_special_tokens=False)["input_ids"]
            elif fam == "tools" and roll < 0.85:
                name = calculator_name(rng, name_case)
                msgs = tool_call_conversation(item, name)
                out.append(chat(msgs, [calculator_tool(name)], name))
                continue
            else:
                msgs = [
                    {"role": "user", "content": item.prompt},
                    {"role": "assistant", "content": item.target_text},
                ]
                out.append(chat(msgs, None, "calculator"))  # the steps, then the end token
                continue
            out.append((prompt + comp, len(prompt)))
    for _ in range(int(n_per_family * generic)):
        msgs, tools = generic_tool_conversation(rng, made_up_params, name_case)
        out.append(chat(msgs, tools, tools[0]["function"]["name"]))
    for _ in range(int(n_per_family * parallel)):
        name = calculator_name(rng, name_case)
        out.append(chat(parallel_call_conversation(rng, name), [calculator_tool(name)], name))
    rng.shuffle(out)
    return out
