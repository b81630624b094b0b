"""The same faults seen through every surface: both frameworks' streams and async calls,
`generate_batch`, cancellation, `specguard serve` in front of a failing upstream, and a reply far
past the budget under a memory cap."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from faulty_engine import ANSWER, CFG, MODEL, PROMPT

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.backends.remote.endpoint import EndpointTarget
from specguard_integrations.errors import (
    EndpointReplyError,
    EndpointUnreachable,
)


def _engine(draft, engine, **kw):
    target = EndpointTarget(engine.url, MODEL, **{"max_retries": 0, "timeout": 2.0, **kw})
    return SpecGuard(draft, target, CFG)


# ---------------------------------------------------------------- framework streams
def test_langchain_stream_retries_a_dropped_first_connection(draft, engine):
    from specguard_integrations.langchain import SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine), max_retries=1)
    engine.set(mode="cut", times=1)  # the first request's body is cut off: no step yet
    assert "".join(llm.stream(PROMPT)) == ANSWER
    engine.set(mode="cut", times=1)
    assert llm.invoke(PROMPT) == ANSWER
    engine.set(mode="cut", times=1)
    without = SpecGuardLLM(engine=_engine(draft, engine), max_retries=0)
    with pytest.raises(EndpointUnreachable, match=engine.url.replace(".", r"\.")):
        list(without.stream(PROMPT))


def test_langchain_chat_stream_retries_and_async_too(draft, engine):
    from specguard_integrations.langchain import ChatSpecGuard

    chat = ChatSpecGuard(engine=_engine(draft, engine), max_retries=1)
    engine.set(mode="status", status=502, times=1)
    streamed = "".join(str(c.content) for c in chat.stream("How many?"))
    assert streamed.strip() and engine.log.faults == 1

    async def astream() -> str:
        return "".join([str(c.content) async for c in chat.astream("How many?")])

    engine.set(mode="status", status=502, times=1)
    assert asyncio.run(astream()) == streamed


def test_llama_index_streams_retry_a_dropped_first_connection(draft, engine):
    from specguard_integrations.llama_index import SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine), max_retries=1)
    engine.set(mode="cut", times=1)
    *_, last = llm.stream_complete(PROMPT)
    assert last.text == ANSWER

    async def astream() -> str:
        out = ""
        async for r in await llm.astream_complete(PROMPT):
            out = r.text
        return out

    engine.set(mode="cut", times=1)
    assert asyncio.run(astream()) == ANSWER


def test_a_stream_does_not_restart_after_its_first_step(draft, engine):
    from specguard_integrations.langchain import SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine), max_retries=3)
    chunks = []
    with pytest.raises(EndpointReplyError):
        for chunk in llm.stream(PROMPT):
            chunks.append(chunk)
            engine.set(mode="overlong", tokens=900)  # after the first step: not retried
    assert chunks == ["Tom has 3 apples.\n\n"]


# ---------------------------------------------------------------- cancellation, batches
def test_cancellation_reaches_the_request_in_flight(draft, engine):
    from specguard_integrations.langchain import SpecGuardLLM

    llm = SpecGuardLLM(engine=_engine(draft, engine, timeout=30.0))
    engine.set(mode="hang", seconds=20.0)

    async def cancelled() -> float:
        t0 = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(llm.ainvoke(PROMPT), 0.5)
        return time.monotonic() - t0

    assert asyncio.run(cancelled()) < 2.0  # not the 20 s the server hangs
    engine.set(mode="ok")
    assert llm.invoke(PROMPT) == ANSWER


def test_generate_batch_keeps_each_failure_in_its_place(draft, engine):
    sg = _engine(draft, engine)
    engine.set(mode="status", status=500, times=1)  # whichever request comes first fails
    out = sg.generate_batch([PROMPT, PROMPT], return_exceptions=True, max_concurrency=1)
    assert isinstance(out[0], EndpointUnreachable) and engine.url in str(out[0])
    assert out[1].text == ANSWER


# ---------------------------------------------------------------- serve in front of it
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_answers_a_failing_upstream_in_time_then_serves_again(engine, tmp_path):
    port = _free_port()
    config = tmp_path / "never-accept.json"  # every step goes to the upstream target
    SpecGuardConfig(k=1, temperature=0.0, tau=1.5, max_step_tokens=64).to_file(config)
    cmd = [
        sys.executable,
        "-m",
        "specguard_integrations.cli",
        "serve",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        "--target-endpoint",
        engine.url,
        "--target-model",
        MODEL,
        "--target-timeout",
        "1",
        "--target-max-retries",
        "1",
        "--config",
        str(config),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stdout.read()  # type: ignore[union-attr]
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        body = {"model": "specguard", "prompt": PROMPT, "max_tokens": 200, "temperature": 0}
        engine.set(mode="hang", seconds=30.0)
        t0 = time.monotonic()
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 504 and time.monotonic() - t0 < 10
        assert "timed out" in r.json()["error"]["message"]
        engine.set(mode="malformed", shape={"choices": {}})
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 502 and "malformed" in r.json()["error"]["message"]
        engine.set(mode="hang", seconds=30.0)
        with httpx.stream(
            "POST", url + "/v1/completions", json={**body, "stream": True}, timeout=60
        ) as s:
            lines = list(s.iter_lines())
        # the stream's status line was sent before the failure: it ends with an error event
        assert s.status_code == 200, lines
        assert any("timed out" in line for line in lines if line.startswith("data:")), lines
        engine.set(mode="ok")
        r = httpx.post(url + "/v1/completions", json=body, timeout=60)
        assert r.status_code == 200, r.text
    finally:
        proc.terminate()
        proc.wait(30)


# ---------------------------------------------------------------- memory
def test_a_reply_of_100k_tokens_is_refused_under_a_memory_cap(engine):
    """In a child process capped at 1.5 GiB of address space: the reply is refused (by the
    body cap or the budget), the process does not grow toward it."""
    engine.set(mode="overlong", tokens=100_000)  # about 300 kB of text, usage 100000
    code = textwrap.dedent(
        f"""
        import resource, sys
        cap = 1536 << 20
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        from specguard_integrations.errors import EndpointReplyError
        from specguard_integrations.backends.remote.endpoint import EndpointTarget
        from specguard_integrations.engine.backends import DecodeSettings
        from specguard_integrations.segmentation import make_segmenter

        def rss():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmRSS"))

        t = EndpointTarget({engine.url!r}, {MODEL!r}, max_retries=0, timeout=10)
        s = t.start("Question: how many?\\n")
        settings = DecodeSettings(1, 0.0, 1.0, 48, make_segmenter("blank_line", ()))
        before = rss()
        try:
            s.write_step(settings, None)
        except EndpointReplyError as err:
            print("refused", rss() - before, err)
            sys.exit(0)
        sys.exit("accepted")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "100000 tokens" in out.stdout and engine.url in out.stdout
    assert int(out.stdout.split()[1]) < 50_000  # the process grew by less than 50 MB (kB)
