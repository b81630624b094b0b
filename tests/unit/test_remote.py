"""Text-level pieces of the remote backends and the plain decoder, without a server."""

import json

import httpx
import pytest

from specguard_integrations.backends.remote.client import OpenAICompatibleClient
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.backends.remote.replies import Completion, to_candidate
from specguard_integrations.baselines.plain import _held_back, plain_stream
from specguard_integrations.engine.backends import DecodeSettings
from specguard_integrations.engine.candidate import cut_text
from specguard_integrations.engine.selection import jaccard_medoid
from specguard_integrations.segmentation import make_segmenter

MARKERS = ("Final Answer:", "Answer:")


def settings(seg: str = "blank_line", stop: tuple[str, ...] = ()) -> DecodeSettings:
    return DecodeSettings(1, 0.0, 1.0, 48, make_segmenter(seg, MARKERS), stop, "")


def test_cut_text_boundary_final_answer_and_stop():
    seg = make_segmenter("blank_line", MARKERS)
    assert cut_text("2 + 3 = 5\n\n5 * 2", seg, ()) == (11, "2 + 3 = 5\n\n", "boundary")
    assert cut_text("Answer: 7\nmore", seg, ()) == (10, "Answer: 7\n", "final_answer")
    assert cut_text("2 + 3", seg, ()) is None
    # a stop string reaches past the kept text; one starting in the committed tail cuts at 0
    assert cut_text("x = 1 END y", seg, ("END",)) == (9, "x = 1 ", "stop")
    assert cut_text("ND more", seg, ("END",), tail="foo E") == (2, "", "stop")


def test_stop_hints_never_end_a_step_early():
    assert make_segmenter("blank_line", MARKERS).stop_hints == ("\n\n",)
    assert make_segmenter("newline", MARKERS).stop_hints == ("\n",)
    assert make_segmenter("tool_call", MARKERS).stop_hints == ("</tool_call>",)
    assert make_segmenter("react", MARKERS).stop_hints == ("\nObservation:",)
    assert make_segmenter("step_marker", MARKERS).stop_hints == ()  # needs look-ahead


def test_restore_boundary_only_after_text():
    blank = make_segmenter("blank_line", MARKERS)
    tools = make_segmenter("tool_call", MARKERS)
    react = make_segmenter("react", MARKERS)
    assert blank.restore("2 + 2 = 4") == "2 + 2 = 4\n\n"
    assert blank.restore("") == ""  # the model ended: no boundary invented
    assert tools.restore('<tool_call>{"name": "f"}') == '<tool_call>{"name": "f"}</tool_call>'
    assert tools.restore("plain words") == "plain words"
    # the server cut "\nObservation:" off an Action Input line: its newline comes back
    step = "Thought: add\nAction: calc\nAction Input: 2+2"
    assert react.restore(step) == step + "\n"
    assert react.find(react.restore(step)).kind == "tool_call"


def test_completion_to_candidate_counts_tokens_of_the_kept_step():
    c = Completion(
        "1 + 1 = 2\n\nAnswer: 2\n", "stop", True, 9, 20, [0, 1, 3, 5, 7, 9, 10, 11], [-0.1] * 8
    )
    cand = to_candidate(c, settings())
    assert cand.text == "1 + 1 = 2\n\n" and cand.finish == "boundary"
    assert cand.num_tokens == 7  # offsets below 11 characters
    eos = Completion("Answer: 2", "stop", False, 4, 20, None, None)
    cand = to_candidate(eos, settings())
    assert cand.finish == "eos" and cand.text == "Answer: 2" and cand.num_tokens == 4
    long = Completion("abcdef", "length", False, 6, 20, None, None)
    assert to_candidate(long, settings()).finish == "max_step_tokens"


def test_jaccard_medoid_first():
    texts = ["2 + 3 = 5", "2 + 3 = 6", "2 + 3 = 5", "seven"]
    assert jaccard_medoid(texts) == 0
    assert jaccard_medoid(["seven", "2 + 3 = 5", "2 + 3 = 5"]) == 1  # ties: sampling order
    assert jaccard_medoid(["a"]) == 0


def test_held_back_text_that_may_start_a_stop():
    assert _held_back("x = 1 EN", ("END",)) == 2
    assert _held_back("x = 1", ("END",)) == 0
    assert _held_back("ab\n", ("\n\n",)) == 1


def plain_generate(lm, prompt, **kwargs):
    gen = plain_stream(lm, prompt, **kwargs)
    while True:
        try:
            next(gen)
        except StopIteration as done:
            return done.value


def test_plain_generate_stops_and_reports_logprobs():
    from specguard_integrations.testing import tiny_lm

    lm = tiny_lm(seed=0)
    free = plain_generate(lm, "abc", max_tokens=12)
    assert free.completion_tokens == len(free.logprobs) == len(free.token_ids)
    assert all(lp <= 0 for lp in free.logprobs)
    if len(free.text) >= 3:
        stop = free.text[1:3]
        cut = plain_generate(lm, "abc", max_tokens=12, stop=(stop,))
        assert cut.stop_reason == stop and cut.text == free.text[: free.text.find(stop)]
        kept = plain_generate(lm, "abc", max_tokens=12, stop=(stop,), include_stop=True)
        assert kept.text.endswith(stop)
    with pytest.raises(ValueError, match="empty"):
        plain_generate(lm, "  ", max_tokens=4)


def test_client_validates_settings_and_does_not_retry_4xx():
    with pytest.raises(ValueError, match="http"):
        OpenAICompatibleClient("localhost:8000")
    with pytest.raises(ValueError, match="model"):
        EndpointTarget("http://x", "")
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(400, json={"error": {"message": "max_tokens too large"}})

    client = OpenAICompatibleClient("http://x", max_retries=3)
    client._client = httpx.Client(transport=httpx.MockTransport(handler))
    with pytest.raises(Exception, match="400: max_tokens too large"):
        client.post("/v1/completions", {})
    assert len(calls) == 1

    flaky = iter([503, 503, 200])

    def retry(request: httpx.Request) -> httpx.Response:
        code = next(flaky)
        return httpx.Response(code, json={"choices": []} if code == 200 else {"error": "busy"})

    client._client = httpx.Client(transport=httpx.MockTransport(retry))
    assert client.post("/v1/completions", {}) == {"choices": []}


def _structured_server(log: list[dict]) -> httpx.MockTransport:
    """Writes "4" (cut by the budget), then "2" and EOS, whatever it is asked, and keeps every
    request body."""

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        log.append(body)
        chat = "messages" in body
        msgs = body.get("messages") or []
        written = msgs[-1]["content"] if chat and msgs[-1]["role"] == "assistant" else ""
        full = written if chat else body["prompt"]
        text, finish = ("", "stop") if full.endswith("42") else ("2", "stop")
        if not full.endswith("4") and not full.endswith("42"):
            text, finish = "4", "length"
        choice = {"index": 0, "finish_reason": finish, "stop_reason": None}
        choice.update(
            {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        )
        usage = {"prompt_tokens": 5, "completion_tokens": len(text), "total_tokens": 5}
        return httpx.Response(200, json={"choices": [choice], "usage": usage})

    return httpx.MockTransport(answer)


@pytest.mark.parametrize(
    ("engine", "api", "kind", "field"),
    [
        (
            "vllm",
            "completions",
            "json_schema",
            {"structured_outputs": {"json": {"type": "integer"}}},
        ),
        ("vllm", "chat", "regex", {"structured_outputs": {"regex": "[0-9]+"}}),
        ("sglang", "completions", "json_schema", {"json_schema": '{"type": "integer"}'}),
        ("sglang", "completions", "regex", {"regex": "[0-9]+"}),
        ("llamacpp", "completions", "json_schema", {"json_schema": {"type": "integer"}}),
        ("llamacpp", "completions", "regex", {}),
        ("tgi", "completions", "json_schema", {}),
        (
            "tgi",
            "chat",
            "json_schema",
            {"response_format": {"type": "json", "value": {"type": "integer"}}},
        ),
        ("tgi", "chat", "regex", {"response_format": {"type": "regex", "value": "[0-9]+"}}),
        ("specguard", "completions", "json_schema", {}),  # `specguard serve` takes no field
        (
            "ollama",
            "chat",
            "json_schema",
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "output",
                        "schema": {"type": "integer"},
                        "strict": True,
                    },
                }
            },
        ),
        ("ollama", "chat", "regex", {}),
    ],
)
def test_a_constraint_goes_in_the_engines_field_where_the_text_starts(engine, api, kind, field):
    run_with_fields(engine, api, kind, field, {})


def test_a_grammar_field_the_user_sends_stands_alone():
    # the user's own vLLM field in extra_body: no second one is added
    mine = {"guided_json": {"type": "integer"}}
    log = run_with_fields("vllm", "completions", "json_schema", mine, mine)
    assert all("structured_outputs" not in b for b in log)


def run_with_fields(engine, api, kind, field, extra):
    from specguard_integrations import SpecGuard, SpecGuardConfig
    from specguard_integrations.backends.remote.endpoint import EndpointTarget
    from specguard_integrations.constraint import Constraint
    from specguard_integrations.testing import tiny_lm

    log: list[dict] = []
    remote = EndpointTarget("http://engine.test", "m", engine=engine, api=api, extra_body=extra)
    remote.http._client = httpx.Client(transport=_structured_server(log))
    c = (
        Constraint.json_schema({"type": "integer"})
        if kind == "json_schema"
        else Constraint.regex("[0-9]+")
    )
    cfg = SpecGuardConfig.greedy(tau=1.01, max_step_tokens=1, max_new_tokens=8)
    result = SpecGuard(tiny_lm("llama", seed=1), remote, cfg).generate("Q: 6 * 7?\n", constraint=c)
    assert result.text == "42" and all(s.source == "target" for s in result.steps)
    steps = [b for b in log if b["max_tokens"] == 1 and not b.get("echo")]
    first, later = steps[0], steps[1:]
    assert {k: first[k] for k in field} == field  # the first step: the engine's own field
    ours = set(field) - set(extra)  # extra_body goes with every request, as the user asked
    assert not ours & {k for b in later for k in b}  # mid-text steps: checked instead
    assert {"structured_outputs", "json_schema", "regex", "response_format"} & set(first) == set(
        field
    ) - set(extra)
    return log
