"""Adapter parameters, validated at construction: the names users bring from other integrations
are mapped, every other unknown name is refused by name, and the per-call config follows."""

import pytest
from pydantic import ValidationError

from specguard_integrations.langchain import ChatSpecGuard, SpecGuardLLM, SpecGuardReasoningChain
from specguard_integrations.llama_index import SpecGuardLLM as LlamaSpecGuardLLM

CLASSES = [ChatSpecGuard, SpecGuardLLM, SpecGuardReasoningChain, LlamaSpecGuardLLM]


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("given", "field", "value"),
    [
        ({"max_new_tokens": 33}, "max_tokens", 33),  # transformers / HuggingFaceLLM
        ({"num_predict": 34}, "max_tokens", 34),  # ChatOllama
        ({"num_output": 35}, "max_tokens", 35),  # LlamaIndex
        ({"stop_sequences": ["END"]}, "stop", ["END"]),
        ({"stop": "Answer"}, "stop", ["Answer"]),  # a string is one stop
        ({"top_p": 0.5}, "top_p", 0.5),
        ({"generate_kwargs": {"max_new_tokens": 9, "do_sample": False}}, "max_tokens", 9),
        ({"generate_kwargs": {"do_sample": False}}, "temperature", 0.0),
        ({"do_sample": False}, "temperature", 0.0),
    ],
)
def test_other_integrations_names_are_mapped(cls, given, field, value):
    obj = cls(**given)
    assert getattr(obj, field) == value
    cfg = obj.call_config({})
    if field == "max_tokens":
        assert cfg.max_new_tokens == value
    if field == "top_p":
        assert cfg.top_p == value
    if field == "temperature":
        assert cfg.temperature == 0.0 and cfg.k == 1


@pytest.mark.parametrize("cls", CLASSES)
def test_model_names_select_the_target_and_loading_options_reach_both(cls):
    obj = cls(
        draft="d",
        model="t",
        model_kwargs={"revision": "r1"},
        device_map="auto",
        draft_kwargs={"revision": "r0"},
        tokenizer_kwargs={"padding_side": "left"},
    )
    assert obj.target == "t"
    assert obj.draft_kwargs == {
        "revision": "r0",
        "device_map": "auto",
        "tokenizer_kwargs": {"padding_side": "left"},
    }
    assert obj.target_kwargs == {
        "revision": "r1",
        "device_map": "auto",
        "tokenizer_kwargs": {"padding_side": "left"},
    }
    assert cls(draft="d", model_name="t").target == "t"
    assert cls(draft="d", model_id="t").target == "t"


@pytest.mark.parametrize("cls", CLASSES)
@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"foo": 1}, "unknown parameter 'foo'"),
        ({"top_k": 40}, "top_k is not supported"),
        ({"repetition_penalty": 1.1}, "repetition_penalty is not supported"),
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"top_p": 0}, "top_p"),
        ({"stop": [5]}, r"stop\[0\] must be a string"),
        ({"stop": [""]}, r"stop\[0\] is empty"),
        ({"model": "t"}, "give both draft and target"),
        ({"draft": "d", "target": "t", "model": "u"}, "disagree"),
        ({"generate_kwargs": {"num_beams": 4}}, r"generate_kwargs\['num_beams'\] is not supported"),
        ({"draft_model": object()}, "draft_model and draft_tokenizer are given together"),
        ({"tool_call_format": "pythonic"}, "unknown value 'pythonic'"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_or_unknown_names_fail_at_construction(cls, given, message):
    with pytest.raises((ValidationError, ValueError), match=message):
        cls(**given)


def test_temperature_zero_is_greedy_and_per_call_values_win():
    llm = ChatSpecGuard(temperature=0.7, max_tokens=50)
    kwargs = {"temperature": 0.0, "num_predict": 7, "top_p": 0.9}
    cfg = llm.call_config(kwargs)
    assert (cfg.temperature, cfg.k, cfg.max_new_tokens, cfg.top_p) == (0.0, 1, 7, 0.9)
    assert kwargs == {}  # every known name was taken
    assert llm.call_stop("Answer") == ("Answer",)


def test_llama_index_metadata_honours_overrides_without_loading():
    llm = LlamaSpecGuardLLM(context_window=1234, num_output=77)
    assert llm._engine is None
    from unittest import mock

    with mock.patch.object(type(llm), "model_names", return_value=("d", "t")):
        meta = llm.metadata
    assert (meta.context_window, meta.num_output, meta.model_name) == (1234, 77, "t")
    assert llm._engine is None  # reporting overridden metadata loads nothing
