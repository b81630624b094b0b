"""An agent's conversation, turn after turn, with the prefix cache on and off in one run.

Real pair (default): the GGUF pair (SmolLM2-135M drafting for Gemma-3-270M) through
`ChatSpecGuard`, greedy, k = 1, 32-token answers. For each system prompt (about 0.7k, 2.2k and
4.4k target tokens, and a short one for reference) a 5-turn conversation: each turn is the same
conversation plus the last answer and one short user turn. Printed per turn: seconds, the
prompt's tokens, how many were read from the cache (target and draft), the answer's tokens, and
the ratio to a short-history call (the short system prompt's turn 2, cache off) and to the same
turn of the short conversation (which asks the same questions).

    .venv/bin/python benchmarks/agent_loop.py                 # the real GGUF pair
    .venv/bin/python benchmarks/agent_loop.py --langgraph 8   # bundled pair, LangGraph agent

`--langgraph N`: the bundled pair through LangGraph's `create_react_agent` with a calculator
tool, on N held-out tools items, with an agent's short system prompt and with 250 tokens of
numbered rules: total agent time, answers right and prompt tokens cached, cache on and off.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = (("off", 0), ("on", 1 << 30))
AGENT_SYSTEM = "You are a careful assistant. Use the Calculator tool for arithmetic."
USER_TURNS = [
    "What is 17 + 25?",
    "Now multiply that by 3.",
    "Subtract 40 from the result.",
    "Is that number even or odd?",
    "Give the final number once more.",
]
RULES = [
    "Answer in short numbered steps and finish with a line starting with 'Answer:'.",
    "When a tool is available for arithmetic, call it instead of computing in your head.",
    "Never invent tool results; wait for the observation before you continue.",
    "Quote numbers exactly as the user wrote them, with no thousands separators.",
    "If the question is ambiguous, state the reading you chose in one sentence.",
    "Keep every step under twenty words and avoid repeating earlier steps.",
    "Tools: calculator(expression: string) evaluates a + b, a - b or a * b with integers.",
    "Tools: lookup(key: string) returns a stored value by its key, or an error message.",
]


def system_prompt(tokenizer, target_tokens: int) -> str:
    """Numbered rules, repeated with their section number, until about `target_tokens`."""
    lines, section = ["You are a careful assistant working inside an agent framework."], 1
    while len(tokenizer.encode("\n".join(lines))) < target_tokens:
        lines += [f"Section {section}, rule {i + 1}: {r}" for i, r in enumerate(RULES)]
        section += 1
    while len(lines) > 2 and len(tokenizer.encode("\n".join(lines))) > target_tokens:
        lines.pop()
    return "\n".join(lines)


def conversation(chat, system: str, cache_bytes: int) -> list[dict]:
    from langchain_core.messages import HumanMessage, SystemMessage

    for lm in chat.engine.local_models():
        lm.prefix_cache.clear()
    bound = chat.model_copy(update={"config": chat.config.merged(prefix_cache_bytes=cache_bytes)})
    msgs: list = [SystemMessage(system)]
    rows = []
    for turn in USER_TURNS:
        msgs.append(HumanMessage(turn))
        t0 = time.perf_counter()
        reply = bound.invoke(msgs)
        took = time.perf_counter() - t0
        summary = reply.response_metadata["specguard"]
        rows.append(
            {
                "seconds": took,
                "prompt": summary["prompt_tokens"],
                "cached": summary["cached_tokens"],
                "draft_cached": summary["draft_cached_tokens"],
                "out": reply.usage_metadata["output_tokens"],
            }
        )
        msgs.append(reply)
    return rows


def real_pair(sizes: list[int]) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fetch_assets import gemma3_gguf, smollm2_gguf

    from specguard_integrations import SpecGuardConfig
    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.registry import load_pair

    (dd, df), (td, tf) = smollm2_gguf(), gemma3_gguf()
    cfg = SpecGuardConfig.greedy(max_new_tokens=32)
    engine = load_pair(
        str(dd),
        str(td),
        cfg,
        device="cpu",
        draft_kwargs={"gguf_file": df},
        target_kwargs={"gguf_file": tf},
    )
    chat = ChatSpecGuard(engine=engine, config=cfg)
    tok = engine.target.local_model.tokenizer
    short = conversation(chat, system_prompt(tok, 75), 0)
    ref = short[1]["seconds"]
    print(
        f"reference: a short-history call (75-token system prompt, turn 2, cache off): {ref:.2f} s"
    )
    print(
        "| system prompt | cache | turn | prompt tokens | cached (target / draft) | out | s"
        " | vs short call | vs same turn, short |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(75, "off", short)]
    for size in sizes:
        system = system_prompt(tok, size)
        runs += [(size, label, conversation(chat, system, b)) for label, b in CACHE]
    for size, label, rows in runs:
        for i, r in enumerate(rows, 1):
            same = short[i - 1]["seconds"]
            print(
                f"| {size} | {label} | {i} | {r['prompt']} | {r['cached']} / {r['draft_cached']}"
                f" | {r['out']} | {r['seconds']:.2f} | {r['seconds'] / ref:.1f}x"
                f" | {r['seconds'] / same:.1f}x |",
                flush=True,
            )


def langgraph(n: int) -> None:
    from langchain_core.tools import tool
    from langgraph.prebuilt import create_react_agent

    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.tasks import make_split
    from specguard_integrations.tasks.base import calculator as evaluate

    @tool("Calculator")
    def calculator(expression: str) -> str:
        """Evaluate a + b, a - b or a * b with integers."""
        return evaluate(expression)

    items = make_split("tools", "test", n)
    base = ChatSpecGuard(device="cpu")
    systems = [
        ("agent prompt", AGENT_SYSTEM),
        # numbered rules up to a 512-token window's share (the bundled pair never saw such)
        ("250-token rules", system_prompt(base.engine.target.local_model.tokenizer, 250)),
    ]
    print(f"LangGraph create_react_agent, bundled pair, {len(items)} tools items")
    for name, system in systems:
        for label, budget in CACHE:
            for lm in base.engine.local_models():
                lm.prefix_cache.clear()
            model = base.model_copy(
                update={"config": base.config.merged(prefix_cache_bytes=budget)}
            )
            right, t0, read, prompt = 0, time.perf_counter(), 0, 0
            for item in items:
                agent = create_react_agent(model, [calculator], prompt=system)
                out = agent.invoke({"messages": [("user", item.prompt)]}, {"recursion_limit": 12})
                right += item.answer in str(out["messages"][-1].content)
                usage = [
                    m.usage_metadata for m in out["messages"] if getattr(m, "usage_metadata", None)
                ]
                read += sum(u["input_token_details"]["cache_read"] for u in usage)
                prompt += sum(u["input_tokens"] for u in usage)
            took = time.perf_counter() - t0
            print(
                f"{name}, cache {label}: {took:.1f} s total, {right}/{len(items)} right,"
                f" {read} of {prompt} prompt tokens cached",
                flush=True,
            )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="700,2200,4400", help="system prompt sizes, target tokens")
    p.add_argument("--langgraph", type=int, default=0, help="bundled pair through LangGraph")
    args = p.parse_args()
    if args.langgraph:
        langgraph(args.langgraph)
    else:
        real_pair([int(s) for s in args.sizes.split(",")])


if __name__ == "__main__":
    main()
