"""Failed calls in traces: both handlers end a failed call's run with its error (type and
message), write it and hand it on; `read_trace` reads the error back (and from older files); the
report and `specguard trace view` mark a failed run."""

from __future__ import annotations

import json

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.instrumentation import get_dispatcher

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.langchain import ChatSpecGuard, SpecGuardReasoningChain
from specguard_integrations.llama_index import SpecGuardLLM
from specguard_integrations.testing import tiny_lm
from specguard_integrations.tracing import TraceRun, read_trace
from specguard_integrations.tracing.langchain import SpecGuardTraceHandler
from specguard_integrations.tracing.llama_index import SpecGuardTraceEventHandler
from specguard_integrations.tracing.report import render_html

FAIL_AT = 2  # the stream raises when it is about to hand out this step
MESSAGE = "target went away"


class _Broken:
    """A step stream that hands out `FAIL_AT` steps of a real stream, then raises; everything
    else (``result``, ``close`` ...) is the real stream's."""

    def __init__(self, stream):
        self.stream = stream

    def __getattr__(self, name):
        return getattr(self.stream, name)

    def __iter__(self):
        for i, record in enumerate(self.stream):
            if i == FAIL_AT:
                raise ConnectionError(MESSAGE)
            yield record


@pytest.fixture(scope="module")
def engine():
    return SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, tau=0.745, max_step_tokens=3, max_new_tokens=25, seed=3),
    )


@pytest.fixture
def broken(engine, monkeypatch):
    real = engine.stream
    monkeypatch.setattr(engine, "stream", lambda *a, **k: _Broken(real(*a, **k)))
    return engine


@pytest.fixture
def li_handler(tmp_path):
    seen: list[TraceRun] = []
    handler = SpecGuardTraceEventHandler(path=str(tmp_path / "li.jsonl"), on_run=seen.append)
    get_dispatcher().add_event_handler(handler)
    yield handler, seen
    get_dispatcher().event_handlers.remove(handler)


CALLS = {
    "complete": lambda llm: llm.complete("hello"),
    "chat": lambda llm: llm.chat([ChatMessage(role="user", content="hello")]),
    "stream_complete": lambda llm: list(llm.stream_complete("hello")),
    "stream_chat": lambda llm: list(llm.stream_chat([ChatMessage(role="user", content="hi")])),
}


@pytest.mark.parametrize("call", list(CALLS))
def test_llama_index_handler_ends_a_failed_call_with_its_error(broken, li_handler, tmp_path, call):
    handler, seen = li_handler
    with pytest.raises(ConnectionError):
        CALLS[call](SpecGuardLLM(engine=broken))
    (run,) = handler.runs
    assert run.error == f"ConnectionError: {MESSAGE}"
    assert run.ended_at is not None and run.ended_at >= run.started_at
    assert len(run.steps) == FAIL_AT and run.summary == {}
    assert seen == [run]
    (loaded,) = read_trace(tmp_path / "li.jsonl")
    assert loaded.model_dump() == run.model_dump()


def test_llama_index_handler_still_ends_good_runs_without_error(engine, li_handler, tmp_path):
    handler, _ = li_handler
    SpecGuardLLM(engine=engine).complete("hello")
    (run,) = read_trace(tmp_path / "li.jsonl")
    assert handler.runs[0].model_dump() == run.model_dump()
    assert run.error is None and run.summary["num_steps"] == len(run.steps) > 0


def test_langchain_handler_records_the_error_in_the_same_field(broken, tmp_path):
    path = tmp_path / "lc.jsonl"
    handler = SpecGuardTraceHandler(str(path))
    with pytest.raises(ConnectionError):
        ChatSpecGuard(engine=broken).invoke("hello", config={"callbacks": [handler]})
    (run,) = handler.runs
    assert run.error == f"ConnectionError: {MESSAGE}" and "error" not in run.summary
    assert len(run.steps) == FAIL_AT and run.ended_at is not None
    line = json.loads(path.read_text().splitlines()[-1])
    assert line["type"] == "run" and line["error"] == run.error
    assert read_trace(path)[0].error == run.error


def test_langchain_reasoning_chain_error_is_recorded(broken):
    handler = SpecGuardTraceHandler()
    with pytest.raises(ConnectionError):
        SpecGuardReasoningChain(engine=broken).invoke("2+2?", config={"callbacks": [handler]})
    (run,) = handler.runs
    assert run.error == f"ConnectionError: {MESSAGE}" and len(run.steps) == FAIL_AT


def test_old_trace_files_stay_readable(tmp_path):
    path = tmp_path / "old.jsonl"
    old = [
        {"type": "run", "run_id": "a", "source": "langchain", "started_at": 1.0,
         "ended_at": 2.0, "summary": {"num_steps": 0}, "num_steps": 0},
        {"type": "run", "run_id": "b", "source": "langchain", "started_at": 1.0,
         "ended_at": 2.0, "summary": {"error": "RuntimeError('boom')"}, "num_steps": 0},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(line) + "\n" for line in old))
    good, failed = read_trace(path)
    assert good.error is None and good.summary == {"num_steps": 0}
    assert failed.error == "RuntimeError('boom')" and failed.summary == {}


def test_report_and_trace_view_mark_a_failed_run(broken, tmp_path, capsys):
    from specguard_integrations.cli import main

    path = tmp_path / "t.jsonl"
    handler = SpecGuardTraceHandler(str(path))
    with pytest.raises(ConnectionError):
        ChatSpecGuard(engine=broken).invoke("hello", config={"callbacks": [handler]})
    assert main(["trace", "view", str(path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "1 runs (1 failed)" in out and f"error: ConnectionError: {MESSAGE}" in out
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'class="run errored"' in page
    assert f'<p class="status status-error">error: ConnectionError: {MESSAGE}</p>' in page
    assert 'class="status status-finished"' not in page


def test_report_says_finished_unfinished_and_error_apart():
    runs = [
        TraceRun(run_id="ok", source="engine", ended_at=2.0),
        TraceRun(run_id="cut", source="engine", ended_at=None),
        TraceRun(run_id="bad", source="engine", ended_at=2.0, error="ValueError: <x>"),
    ]
    page = render_html(runs)
    assert page.count('class="status status-finished"') == 1
    assert page.count('class="status status-unfinished"') == 1
    assert '<p class="status status-error">error: ValueError: &lt;x&gt;</p>' in page
    assert page.count("errored") == 2  # the CSS rule and the one failed run


def test_otel_span_of_a_failed_run_has_error_status():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import StatusCode

    from specguard_integrations.tracing.otel import record_run

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    run = TraceRun(run_id="bad", source="engine", ended_at=2.0, error=f"ConnectionError: {MESSAGE}")
    record_run(run, provider.get_tracer("t"))
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR and span.status.description == run.error
    assert span.attributes["error.type"] == "ConnectionError"
