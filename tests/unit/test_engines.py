"""The endpoint backends against scripted servers in each engine's recorded shape: a stop at the
step boundary is never taken for the end of generation, the boundary text comes back, an
engine without n gets k requests, chat continuation follows the engine, usage may be missing."""

from __future__ import annotations

import json

import httpx
import pytest

from specguard_integrations.backends.remote.endpoint import EndpointDraft, EndpointTarget
from specguard_integrations.engine.backends import DecodeSettings, SignalSettings
from specguard_integrations.segmentation import make_segmenter

STEP, REST = "2 + 3 = 5.", "\n\nAnswer: 5\n"
SEG = make_segmenter("blank_line", ("Answer:",))

# /v1/models, /info and /api/version as each engine answers them (recorded shapes)
IDENTITY = {
    "vllm": {"/v1/models": {"data": [{"id": "m", "owned_by": "vllm", "max_model_len": 4096}]}},
    "sglang": {"/v1/models": {"data": [{"id": "m", "owned_by": "sglang"}]}},
    "tgi": {
        "/v1/models": {"data": [{"id": "m", "owned_by": "m"}]},
        "/info": {"model_id": "m", "max_input_tokens": 4095, "router": "text-generation-router"},
    },
    "llamacpp": {"/v1/models": {"data": [{"id": "m.gguf", "owned_by": "llamacpp"}]}},
    "llama-cpp-python": {
        "/v1/models": {"data": [{"id": "m.gguf", "owned_by": "me", "permissions": []}]}
    },
    "ollama": {
        "/v1/models": {"data": [{"id": "m", "owned_by": "library"}]},
        "/api/version": {"version": "0.12.1"},
    },
    "generic": {"/v1/models": {"data": [{"id": "m", "owned_by": "someone"}]}},
}
# engines that name no matched stop: the model is asked for one more token
ASKED = ("llamacpp", "llama-cpp-python", "ollama", "generic")


def _choice(engine: str, text: str, ended: str) -> dict:
    """A completions choice that ended at the boundary ("stop") or by itself ("eos")."""
    stop = ended == "stop"
    c: dict = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": None}
    if engine == "vllm":
        c["text"] = text + ("\n\n" if stop else "")  # include_stop_str_in_output
        c["stop_reason"] = "\n\n" if stop else None
    elif engine == "sglang":
        c["text"] = text + ("\n\n" if stop else "")  # no_stop_trim
        c["matched_stop"] = "\n\n" if stop else 2  # EOS: the EOS token id
    elif engine == "tgi":
        c["text"] = text + ("\n\n" if stop else "")
        c["finish_reason"] = "stop_sequence" if stop else "stop"
    return c


class Scripted:
    """An engine that writes STEP then the answer, stopping at "\\n\\n" when asked to."""

    def __init__(self, engine: str) -> None:
        self.engine, self.posts = engine, []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET":
            body = IDENTITY[self.engine].get(path)
            return httpx.Response(200, json=body) if body else httpx.Response(404, json={})
        body = json.loads(request.content)
        self.posts.append(body)
        prompt = body.get("prompt", "")
        if body.get("max_tokens") == 1:  # the one-token question
            return self._answer(body, "" if prompt.endswith(REST) else "\n\n", "stop")
        if prompt.endswith(REST):  # all written: the model ends
            return self._answer(body, "", "eos")
        if prompt.endswith(STEP + "\n\n"):  # the last step, ended by the model
            return self._answer(body, REST[2:], "eos")
        return self._answer(body, STEP, "stop" if "\n\n" in body.get("stop", []) else "eos")

    def _answer(self, body: dict, text: str, ended: str) -> httpx.Response:
        n = body.get("n", 1) if self.engine in ("vllm", "sglang") else 1
        choices = [{**_choice(self.engine, text, ended), "index": i} for i in range(n)]
        if body.get("logprobs"):
            toks = list(text) + (["\n\n"] if ended == "stop" and self.engine in ASKED else [])
            for c in choices:
                c["logprobs"] = {
                    "tokens": toks,
                    "token_logprobs": [-0.1] * len(toks),
                    "text_offset": list(range(100, 100 + len(toks))),
                }
        usage = {"prompt_tokens": 9, "completion_tokens": len(text)}
        return httpx.Response(
            200, json={"choices": choices, **({"usage": usage} if self.engine != "generic" else {})}
        )


def _backend(cls, engine, declared="auto", **kw):
    server = Scripted(engine)
    b = cls("http://scripted", "m", engine=declared, max_retries=0, **kw)
    b.http._client = httpx.Client(transport=httpx.MockTransport(server))
    return b, server


def _settings(k: int = 1, temperature: float = 0.0) -> DecodeSettings:
    return DecodeSettings(k, temperature, 1.0, 32, SEG)


@pytest.mark.parametrize("engine", list(IDENTITY))
def test_a_stop_at_the_boundary_is_not_the_end(engine):
    target, server = _backend(EndpointTarget, engine)
    session = target.start("Q: 2 + 3?\n")
    first = session.write_step(_settings(), None)
    assert target.profile.name == engine
    assert first.text == STEP + "\n\n" and first.finish == "boundary"  # never "eos"
    second = session.write_step(_settings(), None)
    assert second.text == "Answer: 5\n" and second.finish == "final_answer"
    assert session.so_far == STEP + REST
    asked = [p for p in server.posts if p.get("max_tokens") == 1]
    assert bool(asked) == (engine in ASKED)  # only where unsaid
    if engine in ("llamacpp", "llama-cpp-python"):
        assert server.posts[0]["repeat_penalty"] == 1.0  # the model's own distribution
    if engine == "vllm":
        assert server.posts[0]["include_stop_str_in_output"] is True


@pytest.mark.parametrize("engine", ["llamacpp", "generic", "tgi"])
def test_the_end_of_generation_is_still_the_end(engine):
    target, _ = _backend(EndpointTarget, engine)
    session = target.start("Q: 2 + 3?\n")
    session.so_far = STEP + REST
    last = session.write_step(_settings(), None)
    assert last.text == "" and last.finish == "eos"


@pytest.mark.parametrize("engine", ["vllm", "llamacpp"])
def test_a_remote_draft_gets_k_candidates_on_any_engine(engine):
    draft, server = _backend(EndpointDraft, engine)
    session = draft.start("Q: 2 + 3?\n", SignalSettings())
    import torch

    gen = torch.Generator().manual_seed(0)
    cands = session.propose(_settings(k=3, temperature=0.7), gen)
    assert len(cands) == 3 and all(c.text == STEP + "\n\n" for c in cands)
    steps = [p for p in server.posts if p.get("max_tokens") != 1]
    if engine == "vllm":
        assert len(steps) == 1 and steps[0]["n"] == 3
    else:  # one choice per request: three requests, three seeds
        assert len(steps) == 3 and len({p["seed"] for p in steps}) == 3
        assert not [p for p in server.posts if p.get("max_tokens") == 1]  # tokens told it
    sig = session.score(cands[session.select(cands)])
    assert sig.grounding is None and sig.confidence == pytest.approx(-0.1)


def test_chat_continuation_follows_the_engine():
    for engine, flags in (("vllm", True), ("tgi", False)):
        chat, server = _backend(EndpointTarget, engine, api="chat")
        posts = []
        reply = {"index": 0, "message": {"content": "x"}, "finish_reason": "length"}

        def answer(r, posts=posts, server=server, reply=reply):
            if r.method == "GET":
                return server(r)
            posts.append(json.loads(r.content))
            return httpx.Response(200, json={"choices": [reply]})

        chat.http._client = httpx.Client(transport=httpx.MockTransport(answer))
        session = chat.start("Q")
        session.so_far = "so far"
        session.write_step(_settings(), None)
        assert posts[0]["messages"][-1] == {"role": "assistant", "content": "so far"}
        assert ("continue_final_message" in posts[0]) == flags  # TGI continues by itself
    llama, _ = _backend(EndpointTarget, "llamacpp", api="chat")
    with pytest.raises(ValueError, match=r"cannot continue an assistant turn.*chat_template="):
        llama.start("Q")

    class Template:
        def apply_chat_template(self, msgs, tokenize, add_generation_prompt):
            return f"<user>{msgs[0]['content']}</user><bot>"

    rendered, server = _backend(EndpointTarget, "llamacpp", api="chat", chat_template=Template())
    session = rendered.start("Q: 2 + 3?\n")
    session.write_step(_settings(), None)
    assert server.posts[0]["prompt"] == "<user>Q: 2 + 3?\n</user><bot>"  # rendered here


def test_missing_usage_is_counted_from_the_text():
    target, _ = _backend(EndpointTarget, "generic")
    step = target.start("Q: 2 + 3?\n").write_step(_settings(), None)
    assert step.num_tokens == 3  # ceil(len("2 + 3 = 5.\n\n") / 4): no usage, no logprobs


def test_declared_engines_and_unknown_names():
    target, server = _backend(EndpointTarget, "llamacpp", declared="llamacpp")
    target.start("Q").write_step(_settings(), None)
    assert not [p for p in server.posts if p is None]
    with pytest.raises(ValueError, match="engine: unknown value 'vlm'"):
        EndpointTarget("http://x", "m", engine="vlm")


@pytest.mark.parametrize(
    "models",
    [[], {"data": {"id": "m"}}, {"data": []}, {"data": [None]}, {"data": [{"owned_by": 7}]}, "x"],
    ids=["array", "data-object", "data-empty", "data-null", "owner-number", "string"],
)
def test_engine_detection_reads_any_models_shape_without_failing(models):
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=models if request.url.path == "/v1/models" else {})

    target = EndpointTarget("http://scripted", "m", max_retries=0)
    target.http._client = httpx.Client(transport=httpx.MockTransport(answer))
    assert target.profile.name == "generic"


@pytest.mark.parametrize(
    "probe", [{}, {"choices": []}, {"choices": [7]}, {"choices": [{"text": 3}]}]
)
def test_a_malformed_one_token_answer_is_a_typed_error(probe):
    from specguard_integrations.errors import EndpointReplyError

    server = Scripted("generic")

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else {}
        if body.get("max_tokens") == 1:
            return httpx.Response(200, json=probe)
        return server(request)

    target = EndpointTarget("http://scripted", "m", engine="generic", max_retries=0)
    target.http._client = httpx.Client(transport=httpx.MockTransport(answer))
    with pytest.raises(EndpointReplyError, match=r"http://scripted \(m\) answered"):
        target.start("Q: 2 + 3?\n").write_step(_settings(), None)
