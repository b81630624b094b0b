"""Every adapter starts its calls by one path (`SpecGuardParams.start_call`): `timeout` reaches
the engine and `max_retries` restarts a call whose server could not be reached, on every class,
sync, async and streamed. A path that dropped either would fail here."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.errors import EndpointUnreachable
from specguard_integrations.testing import tiny_lm

TIMEOUT = 123.0


class Flaky:
    """`engine.stream` that fails `fails` times as an unreachable server would, then runs."""

    def __init__(self, engine: SpecGuard, fails: int) -> None:
        self.real, self.fails, self.timeouts = engine.stream, fails, []

    def __call__(self, prompt, **kw):
        self.timeouts.append(kw.get("timeout"))
        if len(self.timeouts) <= self.fails:
            raise EndpointUnreachable("http://upstream: refused (scripted)")
        return self.real(prompt, **kw)


def _engine() -> SpecGuard:
    cfg = SpecGuardConfig.greedy(tau=0.5, max_new_tokens=6, max_step_tokens=3)
    return SpecGuard(tiny_lm(seed=1), tiny_lm(seed=2), cfg)


async def _drain(agen):
    return [x async for x in agen]


def _langchain_runs():
    from langchain_core.messages import HumanMessage

    from specguard_integrations.langchain import (
        ChatSpecGuard,
        SpecGuardLLM,
        SpecGuardReasoningChain,
    )

    chat_in, text_in = [HumanMessage("2 + 2?")], "2 + 2?"
    for cls, value in ((ChatSpecGuard, chat_in), (SpecGuardLLM, text_in)):
        yield cls, "invoke", lambda o, v=value: o.invoke(v)
        yield cls, "ainvoke", lambda o, v=value: asyncio.run(o.ainvoke(v))
        yield cls, "stream", lambda o, v=value: list(o.stream(v))
        yield cls, "astream", lambda o, v=value: asyncio.run(_drain(o.astream(v)))
    chain = SpecGuardReasoningChain
    yield chain, "invoke", lambda o: o.invoke("2 + 2?")
    yield chain, "ainvoke", lambda o: asyncio.run(o.ainvoke("2 + 2?"))
    yield chain, "stream", lambda o: list(o.stream("2 + 2?"))
    yield chain, "astream", lambda o: asyncio.run(_drain(o.astream("2 + 2?")))


def _llama_index_runs():
    from llama_index.core.base.llms.types import ChatMessage

    from specguard_integrations.llama_index import SpecGuardLLM

    msgs = [ChatMessage(role="user", content="2 + 2?")]

    async def astream(gen):
        return await _drain(await gen)

    yield SpecGuardLLM, "complete", lambda o: o.complete("2 + 2?")
    yield SpecGuardLLM, "acomplete", lambda o: asyncio.run(o.acomplete("2 + 2?"))
    yield SpecGuardLLM, "stream_complete", lambda o: list(o.stream_complete("2 + 2?"))
    yield (
        SpecGuardLLM,
        "astream_complete",
        lambda o: asyncio.run(astream(o.astream_complete("2 + 2?"))),
    )
    yield SpecGuardLLM, "chat", lambda o: o.chat(msgs)
    yield SpecGuardLLM, "achat", lambda o: asyncio.run(o.achat(msgs))
    yield SpecGuardLLM, "stream_chat", lambda o: list(o.stream_chat(msgs))
    yield SpecGuardLLM, "astream_chat", lambda o: asyncio.run(astream(o.astream_chat(msgs)))


RUNS = [*_langchain_runs(), *_llama_index_runs()]


@pytest.mark.parametrize(
    ("cls", "how", "run"),
    RUNS,
    ids=[f"{c.__module__.split('.')[1]}.{c.__name__}.{h}" for c, h, _ in RUNS],
)
def test_timeout_and_max_retries_reach_every_call(cls, how, run):
    engine = _engine()
    flaky = Flaky(engine, fails=2)
    engine.stream = flaky  # type: ignore[method-assign]
    run(cls(engine=engine, timeout=TIMEOUT, max_retries=2))
    _one_deadline(flaky.timeouts, 3)  # two refusals retried, the third attempt ran
    # one retry fewer than the refusals: the error stands, after exactly two attempts
    engine = _engine()
    flaky = Flaky(engine, fails=2)
    engine.stream = flaky  # type: ignore[method-assign]
    with pytest.raises(EndpointUnreachable):
        run(cls(engine=engine, timeout=TIMEOUT, max_retries=1))
    _one_deadline(flaky.timeouts, 2)


def _one_deadline(timeouts: list[float], attempts: int) -> None:
    """Each attempt got what was left of one `timeout`, not a fresh one: the call's retries
    together never run past it."""
    assert len(timeouts) == attempts
    assert TIMEOUT - 30 < timeouts[0] <= TIMEOUT
    assert all(later <= earlier for earlier, later in itertools.pairwise(timeouts))


def test_retries_share_one_deadline():
    """Attempts that use up the timeout leave the next one nothing: it ends as a timeout."""
    import time

    from specguard_integrations.errors import GenerationTimeout
    from specguard_integrations.langchain import SpecGuardLLM

    engine = _engine()
    flaky = Flaky(engine, fails=5)
    real = flaky.__call__

    def slow(prompt, **kw):
        time.sleep(0.2)
        return real(prompt, **kw)

    engine.stream = slow  # type: ignore[method-assign]
    with pytest.raises(GenerationTimeout, match=r"timeout=0\.3"):
        SpecGuardLLM(engine=engine, timeout=0.3, max_retries=5).invoke("2 + 2?")
    assert len(flaky.timeouts) == 2 and flaky.timeouts[1] < 0.15
