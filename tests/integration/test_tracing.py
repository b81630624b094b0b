"""Traces: handlers collect one record per step with the right source and scores; JSONL
round-trips and stays whole when runs finish at once."""

import json
import re
import threading

import pytest
from llama_index.core.instrumentation import get_dispatcher

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.langchain import ChatSpecGuard, SpecGuardReasoningChain
from specguard_integrations.llama_index import SpecGuardLLM
from specguard_integrations.testing import tiny_lm
from specguard_integrations.tracing import TraceRun, TraceWriter, read_trace
from specguard_integrations.tracing.langchain import SpecGuardTraceHandler
from specguard_integrations.tracing.llama_index import SpecGuardTraceEventHandler


@pytest.fixture(scope="module")
def engine():
    return SpecGuard(
        tiny_lm("llama", seed=1),
        tiny_lm("llama", seed=2),
        SpecGuardConfig(k=2, tau=0.745, max_step_tokens=5, max_new_tokens=25, seed=3),
    )


def test_langchain_handler_collects_steps_and_jsonl_round_trips(engine, tmp_path):
    path = tmp_path / "trace.jsonl"
    handler = SpecGuardTraceHandler(str(path))
    msg = ChatSpecGuard(engine=engine).invoke("hello", config={"callbacks": [handler]})
    out = SpecGuardReasoningChain(engine=engine).invoke("2+2?", config={"callbacks": [handler]})
    chat_run, chain_run = handler.runs
    expected = msg.response_metadata["specguard_steps"]
    assert [s.model_dump(mode="json") for s in chat_run.steps] == expected
    assert {s.source for s in chat_run.steps} == {s["source"] for s in expected}
    assert chat_run.model_name == "tiny-llama-2" and chat_run.summary["num_steps"] == len(expected)
    assert [s.fused for s in chain_run.steps] == [s["fused"] for s in out["steps"]]
    loaded = read_trace(path)
    assert [r.model_dump() for r in loaded] == [r.model_dump() for r in handler.runs]


def test_llama_index_handler_groups_steps_by_call(engine, tmp_path):
    handler = SpecGuardTraceEventHandler(path=str(tmp_path / "li.jsonl"))
    get_dispatcher().add_event_handler(handler)
    try:
        llm = SpecGuardLLM(engine=engine)
        a = llm.complete("hello")
        b = llm.complete("other prompt")
    finally:
        get_dispatcher().event_handlers.remove(handler)
    runs = handler.runs
    assert len(runs) == 2
    for run, resp in zip(runs, (a, b), strict=True):
        assert [s.model_dump(mode="json") for s in run.steps] == resp.additional_kwargs[
            "specguard_steps"
        ]
        assert run.summary["num_steps"] == len(run.steps)
    assert len(read_trace(tmp_path / "li.jsonl")) == 2


def test_concurrent_appends_never_interleave(engine, tmp_path):
    result = engine.generate("hello")
    path = tmp_path / "t.jsonl"

    def write(i):
        TraceWriter(path).write_run(
            TraceRun(run_id=f"r{i}", source="engine", steps=result.steps, summary=result.summary())
        )

    threads = [threading.Thread(target=write, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == 16 * (len(result.steps) + 1)
    # each run's lines are contiguous: its steps, then its summary
    per_run = len(result.steps) + 1
    for start in range(0, len(lines), per_run):
        block = lines[start : start + per_run]
        assert len({line["run_id"] for line in block}) == 1 and block[-1]["type"] == "run"
    runs = read_trace(path)
    assert len(runs) == 16 and all(len(r.steps) == len(result.steps) for r in runs)


def test_read_trace_reports_bad_lines(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"type": "step"\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        read_trace(bad)


def test_trace_view_writes_a_report(engine, tmp_path):
    from specguard_integrations.cli import main

    path = tmp_path / "trace.jsonl"
    handler = SpecGuardTraceHandler(str(path))
    ChatSpecGuard(engine=engine).invoke("hello", config={"callbacks": [handler]})
    assert main(["trace", "view", str(path), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    run = handler.runs[0]
    assert page.count('class="step"') == len(run.steps)
    assert page.count('<span class="draft"') == sum(s.source == "draft" for s in run.steps)
    assert page.count('<span class="target"') == sum(s.source == "target" for s in run.steps)
    assert 'class="tau"' in page and "<script" not in page
    assert (tmp_path / "rep" / "scores.png").stat().st_size > 1000


def test_opentelemetry_spans_per_generation_and_step(engine):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from specguard_integrations.tracing.otel import record_run

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    handler = SpecGuardTraceHandler(on_run=lambda run: record_run(run, tracer))
    msg = ChatSpecGuard(engine=engine).invoke("hello", config={"callbacks": [handler]})
    spans = exporter.get_finished_spans()
    parent = next(s for s in spans if s.name.startswith("specguard.generate"))
    steps = [s for s in spans if s.name == "specguard.step"]
    records = msg.response_metadata["specguard_steps"]
    assert len(steps) == len(records)
    assert all(s.parent.span_id == parent.context.span_id for s in steps)
    assert parent.attributes["gen_ai.system"] == "specguard"
    assert parent.attributes["gen_ai.usage.output_tokens"] == msg.usage_metadata["output_tokens"]
    for span, rec in zip(steps, records, strict=True):
        assert span.attributes["specguard.step.fused"] == rec["fused"]
        assert span.attributes["specguard.step.source"] == rec["source"]
        assert span.attributes["specguard.step.decision"] == rec["decision"]
        assert span.start_time <= span.end_time


def _record_line(run_id: str, i: int) -> str:  # a step line as the trace writer writes it
    from specguard_integrations.types import StepRecord

    rec = StepRecord(
        step_index=i,
        text="2 + 2 = 4\n\n",
        source="draft",
        num_tokens=5,
        decision="accept",
        signals="grounding+confidence",
        grounding=0.8,
        confidence=-0.1,
        grounding_norm=0.8,
        confidence_norm=0.9,
        fused=0.85,
        threshold=0.7,
        beta=0.3,
        draft_text="2 + 2 = 4\n\n",
        draft_tokens=5,
        num_candidates=1,
        selected_candidate=0,
        finish="boundary",
    )
    line = {"type": "step", "run_id": run_id, "parent_run_id": None, "record": rec.model_dump()}
    return json.dumps(line) + "\n"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"[1, 2]\n", r"t\.jsonl:1: a trace line is a JSON object, got list"),
        (b'{"type": "step", "run_id": "r"}\n', r"t\.jsonl:1: a step line needs .*record"),
        (b'{"type": "bogus"}\n', r"t\.jsonl:1: unknown line type 'bogus'"),
        (b'{"type": "step"\n{}\n', r"t\.jsonl:1: not a JSON line"),
        (b'{"type": "run", "run_id": 3}\n', r"t\.jsonl:1: invalid run line: run_id"),
        (_record_line("r", 0).encode() + b"\xff\xfe\n", r"t\.jsonl:2: not UTF-8 text"),
        (b"", r"t\.jsonl: empty trace file"),
        (b"\n  \n", r"t\.jsonl: empty trace file"),
    ],
)
def test_trace_view_names_the_file_and_line_of_a_bad_trace(tmp_path, capsys, content, message):
    from specguard_integrations.cli import main

    path = tmp_path / "t.jsonl"
    path.write_bytes(content)
    assert main(["trace", "view", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("specguard: error: ") and re.search(message, err), err
    assert "Traceback" not in err


def test_trace_view_on_a_directory_or_a_missing_file(tmp_path, capsys):
    from specguard_integrations.cli import main

    assert main(["trace", "view", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert main(["trace", "view", str(tmp_path / "none.jsonl")]) == 2
    assert "no such trace file" in capsys.readouterr().err


def test_a_truncated_last_line_is_skipped_with_a_warning(tmp_path, capsys):
    from specguard_integrations.cli import main

    path = tmp_path / "killed.jsonl"
    whole = _record_line("r1", 0) + _record_line("r1", 1)
    path.write_text(whole + _record_line("r1", 2)[:40])  # the writer died mid-line
    assert main(["trace", "view", str(path), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr()
    assert "killed.jsonl:3: skipped a truncated last line" in out.err
    assert "1 runs, 2 steps" in out.out
    assert (tmp_path / "rep" / "report.html").is_file()
    (run,) = read_trace(path)
    assert run.ended_at is None and [s.step_index for s in run.steps] == [0, 1]


def test_the_target_verified_score_reaches_metadata_traces_report_and_spans(engine, tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from specguard_integrations.cli import main
    from specguard_integrations.tracing.otel import record_run

    verified = SpecGuard(
        engine.draft.local_model,
        engine.target.local_model,
        engine.config.merged(judge="target", tau=0.5, target_bounds=(-5.0, -4.4)),
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = tmp_path / "trace.jsonl"
    handler = SpecGuardTraceHandler(
        str(path), on_run=lambda run: record_run(run, provider.get_tracer("t"))
    )
    msg = ChatSpecGuard(engine=verified).invoke("hello", config={"callbacks": [handler]})
    records = msg.response_metadata["specguard_steps"]
    assert records and all(r["signals"] == "target_verified" for r in records)
    assert all(isinstance(r["target_score"], float) for r in records)
    assert [s.target_score for s in read_trace(path)[0].steps] == [
        r["target_score"] for r in records
    ]
    spans = [s for s in exporter.get_finished_spans() if s.name == "specguard.step"]
    assert [s.attributes["specguard.step.target_score"] for s in spans] == [
        r["target_score"] for r in records
    ]
    assert main(["trace", "view", str(path), "--out", str(tmp_path / "rep")]) == 0
    page = (tmp_path / "rep" / "report.html").read_text()
    assert 'class="series-t~"' in page and "<th>t</th><th>t~</th>" in page
    assert f"<td>{records[0]['target_score']:.3f}</td>" in page
