"""Loading options reach the model: device_map (no `.to(device)`), attn_implementation and other
from_pretrained options, GGUF-style tokenizer options, already loaded objects; and label-free
calibration of a pair on the user's own prompts."""

from __future__ import annotations

import json

import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.local.model import LocalCausalLM
from specguard_integrations.langchain import ChatSpecGuard
from specguard_integrations.testing import tiny_lm

PROMPT = "Tom has 3 apples and buys 4 more.\n"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    for name, seed in (("d", 1), ("t", 2)):
        lm = tiny_lm(seed=seed)
        lm.model.save_pretrained(root / name)
        lm.tokenizer.save_pretrained(root / name)
    return root / "d", root / "t"


@pytest.mark.parametrize("device_map", [{"": "cpu"}, "auto"])
def test_device_map_places_the_weights_without_moving_them(dirs, device_map, monkeypatch):
    import transformers

    load = transformers.AutoModelForCausalLM.from_pretrained
    moved = []

    def spy(*args, **kwargs):  # the loaded model records any later .to()
        model = load(*args, **kwargs)
        model.to = lambda *a, **k: moved.append(a) or model
        return model

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy)
    lm = LocalCausalLM.from_pretrained(str(dirs[1]), device_map=device_map)
    assert moved == [] and str(lm.device) == "cpu"  # placed by accelerate, never moved
    LocalCausalLM.from_pretrained(str(dirs[1]), device="cpu")
    assert moved == [("cpu",)]  # without device_map the model is moved to `device`
    monkeypatch.undo()
    cfg = SpecGuardConfig.greedy(max_new_tokens=8, max_step_tokens=4)
    sg = SpecGuard.from_pretrained(
        str(dirs[0]),
        str(dirs[1]),
        cfg,
        draft_kwargs={"device_map": device_map},
        target_kwargs={"device_map": device_map},
    )
    assert sg.generate(PROMPT).output_tokens == 8


def test_model_options_reach_the_model_and_the_tokenizer(dirs):
    lm = LocalCausalLM.from_pretrained(
        str(dirs[1]),
        device="cpu",
        attn_implementation="eager",
        tokenizer_kwargs={"model_max_length": 77},
    )
    assert lm.model.config._attn_implementation == "eager"
    assert lm.tokenizer.model_max_length == 77
    chat = ChatSpecGuard(
        draft=str(dirs[0]),
        target=str(dirs[1]),
        model_kwargs={"attn_implementation": "eager"},
        device="cpu",
        max_tokens=6,
    )
    chat.invoke("hi")
    assert chat.engine.draft.lm.model.config._attn_implementation == "eager"
    with pytest.raises(ValueError, match=r"cannot load causal LM .*(not_a_kwarg|unexpected)"):
        LocalCausalLM.from_pretrained(str(dirs[1]), device="cpu", not_a_kwarg=1)


def test_loaded_objects_are_accepted(dirs):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(dirs[1])
    tok = AutoTokenizer.from_pretrained(dirs[1])
    objects = {
        "draft_model": model,
        "draft_tokenizer": tok,
        "target_model": model,
        "target_tokenizer": tok,
        "max_tokens": 6,
    }
    chat = ChatSpecGuard(**objects)
    assert chat.invoke("hi").response_metadata["specguard_steps"]
    assert chat.engine.target.lm.model is model

    from specguard_integrations.llama_index import SpecGuardLLM

    llm = SpecGuardLLM(**objects)
    out = llm.complete("hi")
    assert out.additional_kwargs["specguard_steps"]
    assert llm.engine.draft.lm.model is model and llm.engine.target.lm.model is model


def test_label_free_calibration_hits_the_target_rate_on_other_prompts(tmp_path):
    from specguard_integrations.bench.calibrate import calibrate_unlabelled
    from specguard_integrations.cli import main
    from specguard_integrations.registry import load_pair
    from specguard_integrations.tasks import make_split

    fams = ("arithmetic", "equation", "multihop")
    prompts = [it.prompt for f in fams for it in make_split(f, "test", 320)[300:312]]
    other = [it.prompt for f in fams for it in make_split(f, "test", 360)[340:352]]
    engine = load_pair(None, None, device="cpu")
    result = calibrate_unlabelled(engine, prompts, engine.config, target_rate=0.3)
    steps = [s for p in other for s in engine.generate(p, config=result.config).steps]
    rate = sum(s.source == "target" for s in steps) / len(steps)
    assert abs(rate - 0.3) <= 0.1, (rate, result.chosen)
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts[:6]))
    out = tmp_path / "cal.json"
    args = ["calibrate", "--prompts", str(path), "--target-rate", "0.3", "--out", str(out)]
    assert main(args) == 0
    written = json.loads(out.read_text())
    assert written["calibration"]["objective"] == {"target_rate": 0.3, "labels": 0}
    SpecGuardConfig.from_file(out)  # a normal config file
    assert main([*args[:3], "--max-target-rate", "0.3", "--out", str(out)]) == 2
