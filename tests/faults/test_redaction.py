"""No secret leaves the process: the target's URL carries userinfo (``user:password@``), the
API key is a bearer token, and the upstream quotes both in its error messages and a redirect's
``Location``. Every path a URL or an upstream message takes is searched for them: exceptions
and their ``repr`` and traceback, log records, trace files, OTel spans, and `specguard serve`'s
JSON and stream error bodies and its log."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import time
import traceback

import httpx
import pytest
from faulty_engine import CFG, MODEL, PROMPT, FaultyEngine

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.backends.remote.redaction import Redactor, redact_url
from specguard_integrations.errors import EndpointError

# percent-encoded in the URL ("pw-Zq81/x" in Basic auth), with an "@" as well: the userinfo runs
# to the last "@" of the authority
PASSWORD = "pw-Zq81%2Fx@Y"
KEY = "sk-live-7d1e0c9a4b"
SECRETS = (PASSWORD, "pw-Zq81/x@Y", "Zq81", KEY, "alice:pw")
LEAK = f"Incorrect API key provided: {KEY}. Authorization: Bearer {KEY}, user alice:pw-Zq81/x@Y"


def _url(engine: FaultyEngine) -> str:
    return engine.url.replace("http://", f"http://alice:{PASSWORD}@")


def _clean(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret!r} leaked in {where}: {text[:400]}"


FAULTS = {
    "401": {"mode": "status", "status": 401, "message": LEAK},
    # the key where a short message is cut: masked before the cut, never half-shown
    "cut": {"mode": "status", "status": 400, "message": "x" * 490 + KEY},
    "500": {"mode": "status", "status": 500, "message": LEAK},
    "redirect": {"mode": "redirect", "status": 307, "message": f"http://alice:{PASSWORD}@x/v1"},
    "error-object": {"mode": "malformed", "shape": {"object": "error", "message": LEAK}},
    "hang": {"mode": "hang", "seconds": 5.0},
}


def _failures(draft, engine) -> list[EndpointError]:
    """The error of each fault, through a generation and the client's retries."""
    target = EndpointTarget(_url(engine), MODEL, api_key=KEY, max_retries=1, timeout=1.0)
    sg = SpecGuard(draft, target, CFG)
    errors = []
    for fault in FAULTS.values():
        engine.set(**fault)
        with pytest.raises(EndpointError) as info:
            sg.generate(PROMPT)
        errors.append(info.value)
    return errors


def test_errors_their_repr_and_the_log_carry_no_secret(draft, engine, caplog):
    caplog.set_level(logging.DEBUG)  # every logger: httpx's and httpcore's own too
    errors = _failures(draft, engine)
    gone = FaultyEngine()
    url = _url(gone)
    gone.stop()  # refused: httpx's own message
    with pytest.raises(EndpointError) as info:
        EndpointTarget(url, MODEL, api_key=KEY, max_retries=0).http.post("/v1/completions", {})
    errors.append(info.value)
    assert len(errors) == len(FAULTS) + 1
    for err in errors:
        shown = "".join(traceback.format_exception(err))
        _clean(shown + repr(err) + str(err), type(err).__name__)
        assert "***@127.0.0.1" in str(err)  # the server is still named, without its userinfo
    assert "***" in str(errors[0]) and "Bearer ***" in str(errors[0])  # the upstream message
    records = [r.getMessage() + (logging.Formatter().format(r)) for r in caplog.records]
    assert any("attempt" in r for r in records)  # the retry log was written
    assert any(r.name == "httpx" for r in caplog.records)  # httpx logged its requests
    _clean("\n".join(records), "the log")
    with pytest.raises(ValueError, match=r"\*\*\*@") as bad:
        EndpointTarget(f"ftp://alice:{PASSWORD}@host", MODEL)
    _clean(str(bad.value), "a bad base_url")


def test_trace_files_and_otel_spans_carry_no_secret(draft, engine, tmp_path):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from specguard_integrations.langchain import ChatSpecGuard
    from specguard_integrations.tracing.langchain import SpecGuardTraceHandler
    from specguard_integrations.tracing.otel import record_run

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    path = tmp_path / "trace.jsonl"
    handler = SpecGuardTraceHandler(
        str(path), on_run=lambda run: record_run(run, provider.get_tracer("t"))
    )
    target = EndpointTarget(_url(engine), MODEL, api_key=KEY, max_retries=0, timeout=2.0)
    chat = ChatSpecGuard(engine=SpecGuard(draft, target, CFG))
    engine.set(mode="status", status=401, message=LEAK, skip=1)  # a run has a step first
    with pytest.raises(EndpointError):
        chat.invoke("How many?", config={"callbacks": [handler]})
    (run,) = handler.runs
    assert run.error and "401" in run.error
    _clean(path.read_text(), "the trace file")
    spans = exporter.get_finished_spans()
    assert spans
    for span in spans:
        text = f"{span.status.description} {dict(span.attributes or {})} {span.events}"
        _clean(text, f"span {span.name}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(engine: FaultyEngine, tmp_path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    config = tmp_path / "never-accept.json"
    SpecGuardConfig(k=1, temperature=0.0, tau=1.5, max_step_tokens=64).to_file(config)
    cmd = [sys.executable, "-m", "specguard_integrations.cli", "serve", "--port", str(port)]
    cmd += ["--device", "cpu", "--log-level", "debug", "--config", str(config)]
    cmd += ["--target-endpoint", _url(engine), "--target-model", MODEL]
    cmd += ["--target-timeout", "1", "--target-max-retries", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": KEY}
    out = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        assert proc.poll() is None, (tmp_path / "serve.log").read_text()
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            time.sleep(0.3)
    raise AssertionError("serve did not start")


def test_serve_bodies_streams_and_log_carry_no_secret(engine, tmp_path):
    proc, url = _serve(engine, tmp_path)
    bodies = []
    try:
        body = {"model": "specguard", "prompt": PROMPT, "max_tokens": 100, "temperature": 0}
        chat = {"model": "specguard", "messages": [{"role": "user", "content": "How many?"}]}
        for name in ("401", "500", "redirect", "error-object"):
            engine.set(**FAULTS[name])
            r = httpx.post(url + "/v1/completions", json=body, timeout=60)
            assert r.status_code == 502, r.text
            bodies.append(r.text)
            r = httpx.post(url + "/v1/chat/completions", json=chat, timeout=60)
            bodies.append(r.text)
            with httpx.stream(
                "POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60
            ) as s:
                lines = list(s.iter_lines())
            assert any('"error"' in line for line in lines), lines
            bodies += lines
    finally:
        proc.terminate()
        proc.wait(30)
    assert any("***@127.0.0.1" in b for b in bodies)  # the server is named, masked
    _clean("\n".join(bodies), "serve's bodies")
    log = (tmp_path / "serve.log").read_text()
    assert "attempt" in log  # the retries were logged
    _clean(log, "serve's log")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("http://u:p@h:1/v1", "http://***@h:1/v1"),
        ("see https://tok@h/x and HTTP://a:b@c", "see https://***@h/x and HTTP://***@c"),
        ("Authorization: Bearer abc.def-ghi", "Authorization: Bearer ***"),
        ("no secret here", "no secret here"),
    ],
)
def test_the_redactor_masks_userinfo_bearer_tokens_and_known_secrets(text, shown):
    assert Redactor("http://x")(text) == shown
    assert redact_url("http://u:p@h") == "http://***@h"
    known = Redactor(f"http://alice:{PASSWORD}@h", api_key=KEY)
    _clean(known(f"{KEY} pw-Zq81/x@Y {PASSWORD} alice:pw-Zq81/x@Y"), "the redactor's output")
