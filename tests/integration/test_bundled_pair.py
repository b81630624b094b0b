"""The bundled offline pair: loads with plain from_pretrained, sizes, accuracy floors, template."""

import os
from pathlib import Path

import pytest

from specguard_integrations import SpecGuard
from specguard_integrations.assets import ASSETS, DEFAULT_CONFIG, bundled_pair
from specguard_integrations.config import SpecGuardConfig
from specguard_integrations.registry import load_lm
from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.tasks.runner import solve_plain, solve_specguard

SAMPLE = 12  # held-out items per family (greedy: deterministic)
# Regression floors for the bundled weights, one below what they scored on this sample
# (target: 12 of 12 in every family). Raise them with the weights.
TARGET_FLOOR = {"arithmetic": 11, "equation": 11, "multihop": 11, "tools": 11}


@pytest.fixture(scope="module")
def pair():
    draft_dir, target_dir = bundled_pair()
    return load_lm(str(draft_dir), device="cpu"), load_lm(str(target_dir), device="cpu")


def test_loads_offline_with_plain_from_pretrained():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    for d in bundled_pair():
        model = AutoModelForCausalLM.from_pretrained(d)
        tok = AutoTokenizer.from_pretrained(d)
        assert (Path(d) / "model.safetensors").is_file()
        assert model.config.model_type == "llama" and len(tok) <= model.config.vocab_size


def test_sizes(pair):
    draft, target = pair
    n_draft = sum(p.numel() for p in draft.model.parameters())
    n_target = sum(p.numel() for p in target.model.parameters())
    assert n_target >= 8 * n_draft
    size = sum(f.stat().st_size for f in ASSETS.rglob("*") if f.is_file())
    assert size <= 40 * 2**20, f"assets are {size / 2**20:.1f} MiB"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_accuracy_floors_on_a_fixed_sample(pair, family):
    draft, target = pair
    items = make_split(family, "test", SAMPLE)
    target_ok = sum(solve_plain(target, i).correct for i in items)
    draft_runs = [solve_plain(draft, i) for i in items]
    verdicts = [v for r in draft_runs for v in r.verdicts]
    assert target_ok >= TARGET_FLOOR[family], (family, target_ok)
    assert sum(v.well_formed for v in verdicts) / len(verdicts) >= 0.9


def test_specguard_solves_with_the_bundled_config(pair):
    engine = SpecGuard(*pair)
    cfg = SpecGuardConfig.from_file(DEFAULT_CONFIG)
    items = [i for f in sorted(FAMILIES) for i in make_split(f, "test", 4)]
    solved = [solve_specguard(engine, i, cfg) for i in items]
    # measured 16 of 16 with the bundled weights
    assert sum(s.correct for s in solved) >= 15
    assert all(s.records for s in solved)
    assert {r.source for s in solved for r in s.records} == {"draft", "target"}


def test_chat_template_renders_tools_and_tool_messages(pair):
    _, target = pair
    tools = [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
            },
        }
    ]
    call = {
        "type": "function",
        "function": {"name": "calculator", "arguments": {"expression": "2 * 3"}},
    }
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 * 3?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "content": "6"},
    ]
    text = target.render_chat(msgs, tools=tools)
    assert text == (
        "<|system|>\nTools: calculator(expression)<|end|>\n"
        "<|system|>\nBe brief.<|end|>\n"
        "<|user|>\nWhat is 2 * 3?<|end|>\n"
        '<|assistant|>\n<tool_call>{"name": "calculator", "arguments": {"expression": "2 * 3"}}'
        "</tool_call><|end|>\n"
        "<|tool|>\n6<|end|>\n"
        "<|assistant|>\n"
    )
