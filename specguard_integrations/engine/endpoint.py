"""Backends that reach a model behind an OpenAI-compatible server: the scale-out path.

- `EndpointTarget`: the target served by vLLM, SGLang, TGI, llama.cpp, ... (or
  `specguard serve --mode plain`). Each fallback step is one completions (or chat) request over
  the text so far, with the step boundary sent as stop strings, and the step cut again here by
  the same segmenter the local models use, so a step means the same thing on both sides.
- `EndpointDraft`: a draft behind such a server. It returns token log-probabilities but no
  attention, so SpecGuard runs confidence-only and every record says so; the candidates are
  selected by their word-set Jaccard medoid.

Sessions are plain text, so nothing needs rolling back when a draft step is rejected.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .backends import (
    UNBOUNDED,
    DecodeSettings,
    SignalSettings,
    StepSignals,
    TargetSession,
    check_prompt_text,
)
from .openai_client import EndpointError, OpenAICompatibleClient
from .proposer import Candidate, cut_text
from .selection import jaccard_medoid

if TYPE_CHECKING:
    from .backends import Rng

Api = Literal["completions", "chat"]


def step_stops(settings: DecodeSettings) -> tuple[str, ...]:
    """The segmenter's stop hints and the caller's stop strings, without repeats."""
    return tuple(dict.fromkeys(settings.segmenter.stop_hints + settings.stop))


@dataclass
class Completion:
    """One choice of a server's answer, read into what a step needs."""

    text: str  # generated text, with the stop string restored when the server cut at one
    finish: str  # "stop" | "length" | other
    stopped_at: bool  # the server stopped at one of our stop strings
    tokens: int
    prompt_tokens: int
    offsets: list[int] | None  # character offset per token, when logprobs came back
    logprobs: list[float] | None


class _Endpoint:
    """What the endpoint target and draft share: the request and its reading."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "completions",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        max_connections: int = 64,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if api not in ("completions", "chat"):
            raise ValueError(f"api must be 'completions' or 'chat', got {api!r}")
        if not model:
            raise ValueError("model: the served model's name is required")
        self.api = api
        self.model = model
        self.name = name or model
        self.extra_body = dict(extra_body or {})
        self.http = OpenAICompatibleClient(
            base_url,
            api_key=api_key if api_key is not None else os.environ.get(api_key_env),
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
        )

    def close(self) -> None:
        self.http.close()

    def request_step(
        self,
        prompt: str,
        so_far: str,
        settings: DecodeSettings,
        generator: Rng,
        *,
        n: int = 1,
        logprobs: bool = False,
    ) -> list[Completion]:
        """One step's request: the step's budget and sampling, the boundary as stop strings,
        and a seed drawn from the generation's generator when sampling."""
        import torch

        seed = None
        if generator is not None and settings.temperature > 0:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        stop = step_stops(settings)
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            "n": n,
            # vLLM extension: keep the stop string, so the boundary stays in the step
            "include_stop_str_in_output": True,
            **self.extra_body,
        }
        if stop:
            body["stop"] = list(stop)[:4]  # the OpenAI API takes at most four
        if seed is not None:
            body["seed"] = seed
        if self.api == "completions":
            body["prompt"] = prompt + so_far
            if logprobs:
                body["logprobs"] = 1
            data = self.http.post("/v1/completions", body)
        else:
            messages = [{"role": "user", "content": prompt}]
            if so_far:
                messages.append({"role": "assistant", "content": so_far})
                # vLLM extension: continue the assistant turn instead of starting a new one
                body.update(continue_final_message=True, add_generation_prompt=False)
            body["messages"] = messages
            if logprobs:
                body["logprobs"] = True
            data = self.http.post("/v1/chat/completions", body)
        return self._read(data, stop, n)

    def _read(self, data: dict[str, Any], stop: tuple[str, ...], n: int) -> list[Completion]:
        where = f"{self.http.base_url} ({self.model})"
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            out = [self._choice(c, stop, usage, len(choices)) for c in choices]
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise EndpointError(f"{where} answered malformed data: {err!r}") from err
        if len(out) != n:
            raise EndpointError(f"{where} answered {len(out)} choices, {n} were asked for")
        return out

    def _choice(
        self, c: dict[str, Any], stop: tuple[str, ...], usage: dict[str, Any], count: int
    ) -> Completion:
        if self.api == "completions":
            text = c["text"]
            lp = c.get("logprobs") or {}
            offsets = lp.get("text_offset")
            logprobs = lp.get("token_logprobs")
        else:
            text = c["message"]["content"] or ""
            content = (c.get("logprobs") or {}).get("content")
            logprobs = [t["logprob"] for t in content] if content else None
            offsets = None
            if content:
                offsets, pos = [], 0
                for t in content:
                    offsets.append(pos)
                    pos += len(t["token"])
        if not isinstance(text, str):
            raise TypeError("text is not a string")
        finish = str(c.get("finish_reason") or "stop")
        reason = c.get("stop_reason")
        stopped = isinstance(reason, str) and reason in stop
        if isinstance(reason, str) and stopped and not text.endswith(reason):
            text += reason  # the server cut the stop string off: put the boundary back
        elif finish == "stop" and any(text.endswith(s) for s in stop):
            stopped = True
        if offsets is not None:
            p0 = offsets[0] if offsets else 0
            offsets = [int(o) - p0 for o in offsets]
        return Completion(
            text=text,
            finish=finish,
            stopped_at=stopped,
            tokens=int(usage.get("completion_tokens", 0)) // max(count, 1),
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            offsets=offsets,
            logprobs=[float(x) for x in logprobs] if logprobs else None,
        )


def to_candidate(c: Completion, settings: DecodeSettings) -> Candidate:
    """Cut a completion at the step boundary, counting the tokens of the kept text."""
    cut = cut_text(c.text, settings.segmenter, settings.stop, settings.stop_tail)
    if cut is not None:
        reach, text, finish = cut
    elif c.finish == "length":
        reach, text, finish = len(c.text), c.text, "max_step_tokens"
    else:  # the model ended its answer (EOS) without a boundary
        reach, text, finish = len(c.text), c.text, "eos"
    if c.offsets:
        tokens = max(1, sum(1 for o in c.offsets if o < reach)) if reach else 0
    elif reach < len(c.text) and c.text:
        tokens = math.ceil(c.tokens * reach / len(c.text))
    else:
        tokens = c.tokens
    return Candidate(ids=[], text=text, finish=finish, num_tokens=tokens)


class EndpointTarget(_Endpoint):
    """The target behind an OpenAI-compatible server.

    Args:
        base_url: the server root, e.g. ``http://gpu-node:8000`` (``/v1/...`` is appended).
        model: the served model's name.
        api: ``"completions"`` (the prompt text continued as is) or ``"chat"`` (the prompt as a
            user message and the steps so far continued as the assistant turn).
        api_key: sent as a bearer token; default: the ``api_key_env`` environment variable.
        timeout: seconds per request; max_retries: extra attempts on connection errors, 429, 5xx.
    """

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> EndpointTargetSession:
        return EndpointTargetSession(self, check_prompt_text(prompt))


class TextSession:
    """A session that is only text: what the server is asked to continue."""

    device = "cpu"
    vocab_id: str | None = None
    tokens_left = UNBOUNDED

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.so_far = ""
        self.prompt_tokens = 0  # known after the first request

    def append(self, text: str, ids: list[int] | None) -> None:
        self.so_far += text

    def complete(self, settings: DecodeSettings, generator: Rng) -> Completion:
        """One request continuing the text so far (targets implement it)."""
        raise NotImplementedError

    def write_step(
        self, settings: DecodeSettings, generator: Rng, assist: object = None
    ) -> Candidate:
        """5. The fallback step: one completion, cut at the step boundary, appended."""
        c = self.complete(settings, generator)
        self.prompt_tokens = self.prompt_tokens or c.prompt_tokens
        cand = to_candidate(c, settings)
        self.so_far += cand.text
        return cand


class EndpointTargetSession(TextSession):
    def __init__(self, backend: EndpointTarget, prompt: str) -> None:
        super().__init__(prompt)
        self.backend = backend

    def complete(self, settings: DecodeSettings, generator: Rng) -> Completion:
        return self.backend.request_step(self.prompt, self.so_far, settings, generator)[0]


class EndpointDraft(_Endpoint):
    """A draft behind an OpenAI-compatible server: confidence-only (no attention over HTTP).

    k candidates come from one request with ``n=k`` and token log-probabilities; the most
    consistent candidate is the medoid under word-set Jaccard similarity (no hidden states).
    """

    supports_grounding = False

    def start(
        self, prompt: str, signals: SignalSettings, *, add_special_tokens: bool = True
    ) -> EndpointDraftSession:
        return EndpointDraftSession(self, check_prompt_text(prompt))


class EndpointDraftSession(TextSession):
    def __init__(self, backend: EndpointDraft, prompt: str) -> None:
        super().__init__(prompt)
        self.backend = backend
        self._logprobs: dict[int, list[float]] = {}
        self._pending: Candidate | None = None

    def shares_vocab_with(self, target: TargetSession) -> bool:
        return False

    def assist(self) -> None:
        return None

    def propose(self, settings: DecodeSettings, generator: Rng) -> list[Candidate]:
        completions = self.backend.request_step(
            self.prompt, self.so_far, settings, generator, n=settings.k, logprobs=True
        )
        cands, self._logprobs = [], {}
        for c in completions:
            self.prompt_tokens = self.prompt_tokens or c.prompt_tokens
            if c.logprobs is None:
                raise EndpointError(
                    f"{self.backend.http.base_url} ({self.backend.model}) returned no token"
                    " logprobs: a remote draft needs them for its confidence signal"
                )
            cand = to_candidate(c, settings)
            self._logprobs[id(cand)] = c.logprobs[: max(cand.num_tokens, 1)]
            cands.append(cand)
        return cands

    def select(self, candidates: list[Candidate]) -> int:
        return jaccard_medoid([c.text for c in candidates])

    def score(self, candidate: Candidate) -> StepSignals:
        if self._pending is not None:
            raise RuntimeError("score() called twice without accept() or reject()")
        lps = self._logprobs.get(id(candidate))
        if not lps:
            raise ValueError("cannot score a step without token logprobs")
        self._pending = candidate
        return StepSignals(confidence=min(lps), grounding=None)

    def accept(self) -> None:
        if self._pending is None:
            raise RuntimeError("accept() without a scored step")
        self.so_far += self._pending.text
        self._pending = None

    def reject(self) -> None:
        if self._pending is None:
            raise RuntimeError("reject() without a scored step")
        self._pending = None

    def append(self, text: str, ids: list[int] | None) -> None:
        if self._pending is not None:
            raise RuntimeError("append() while a scored step is pending")
        super().append(text, ids)
