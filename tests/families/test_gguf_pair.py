"""A real pretrained pair loaded from GGUF files (transformers dequantises them): SmolLM2-135M-
Instruct as draft (Llama architecture, 49k vocabulary, ChatML) and Gemma-3-270M as target (262k
vocabulary, no chat template), from PyPI packages, loaded once for the module."""

from __future__ import annotations

import json

import pytest
import torch
from fetch_assets import gemma3_gguf, smollm2_gguf
from starlette.testclient import TestClient

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.langchain import ChatSpecGuard

PROMPT = "Question: A shop sells 3 apples for 2 dollars. How much do 12 apples cost?\n\n"
# no final-answer marker the model writes: the comparison runs the whole budget
CFG = SpecGuardConfig.greedy(max_new_tokens=40, max_step_tokens=20, final_answer_markers=("<END>",))


@pytest.fixture(scope="module")
def pair():
    (dd, df), (td, tf) = smollm2_gguf(), gemma3_gguf()
    engine = SpecGuard.from_pretrained(
        str(dd),
        str(td),
        CFG,
        device="cpu",
        draft_kwargs={"gguf_file": df},
        target_kwargs={"gguf_file": tf},
    )
    return engine, (dd, df), (td, tf)


def test_target_only_equals_the_targets_own_greedy_generate(pair):
    engine, _, (_, tf) = pair
    target = engine.target.lm
    assert target.name.endswith(tf) and len(target.tokenizer) > 250_000
    assert not engine.draft.lm.same_vocab(target)  # text crosses at step boundaries
    result = engine.generate(PROMPT, config=CFG.merged(tau=1.5))
    ids = torch.tensor([target.encode_prompt(PROMPT)])
    with torch.inference_mode():
        out = target.model.generate(
            ids, max_new_tokens=40, do_sample=False, eos_token_id=sorted(target.eos_ids)
        )
    greedy = target.decode([t for t in out[0, ids.shape[1] :].tolist() if t not in target.eos_ids])
    assert result.text == greedy and result.num_steps >= 2  # several boundaries crossed
    mixed = engine.generate(PROMPT, config=CFG.merged(tau=0.6))
    assert mixed.text and all(s.confidence <= 0 for s in mixed.steps)


def test_chat_over_the_pair_has_no_special_tokens(pair):
    engine, _, _ = pair
    chat = ChatSpecGuard(engine=engine)
    msg = chat.invoke("What is 2 + 2? Answer briefly.")
    special = engine.draft.lm.special_texts  # the draft's ChatML renders the chat
    assert msg.content and not any(t in msg.content for t in special), msg.content
    assert (
        "".join(str(c.content) for c in chat.stream("What is 2 + 2? Answer briefly."))
        == msg.content
    )


def test_serve_flags_load_the_same_pair(pair):
    from specguard_integrations.cli.main import _build_parser
    from specguard_integrations.server import create_app
    from specguard_integrations.server.run import served_from_args

    engine, (dd, df), (td, tf) = pair
    args = _build_parser().parse_args(
        [
            "serve",
            "--device",
            "cpu",
            "--draft",
            str(dd),
            "--target",
            str(td),
            "--draft-kwargs",
            json.dumps({"gguf_file": df}),
            "--target-kwargs",
            json.dumps({"gguf_file": tf}),
        ]
    )
    served = served_from_args(args)
    assert served.engine.target.lm is engine.target.lm  # the process-wide registry, no reload
    client = TestClient(create_app(served))
    body = {
        "model": "specguard",
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    content = r.json()["choices"][0]["message"]["content"] or ""
    assert not any(t in content for t in engine.draft.lm.special_texts)
