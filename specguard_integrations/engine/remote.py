"""Backends that reach a model outside this process: the scale-out path.

- `EndpointTarget`: the target served by an OpenAI-compatible server (vLLM, SGLang, TGI, or
  `specguard serve --mode plain`). Each fallback step is one completions (or chat) request over
  the text so far, with the step boundary sent as stop strings and the step cut again here by the
  same segmenter the local models use, so a step means the same thing on both sides.
- `EndpointDraft`: a draft behind such a server. It returns token log-probabilities but no
  attention, so SpecGuard runs confidence-only and every record says so.
- `LangChainTarget`: any LangChain LLM or chat model as the target, step by step.

Sessions are plain text, so nothing needs rolling back when a draft step is rejected. One HTTP
client per backend is shared by every session: concurrent generations keep many requests in
flight over its connection pool.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .backends import DecodeSettings, StepSignals
from .proposer import Candidate, cut_text

if TYPE_CHECKING:
    import httpx
    import torch

    from ..config import SpecGuardConfig
    from ..segmentation import StepSegmenter

log = logging.getLogger(__name__)

Api = Literal["completions", "chat"]


class EndpointError(RuntimeError):
    """The server answered an error, or data that is not an OpenAI-compatible completion."""


class EndpointUnreachable(EndpointError):
    """No answer from the server after the bounded retries (refused, timed out, DNS)."""


def stop_hints(segmenter: StepSegmenter) -> tuple[str, ...]:
    """Stop strings a server can apply for this segmenter without ending a step too early.

    The step is always cut again locally (`cut_text`); these only save the server from writing
    past the boundary. Segmenters whose boundary needs look-ahead get none.
    """
    from ..segmentation import DelimiterSegmenter, ReActSegmenter, ToolCallSegmenter

    if isinstance(segmenter, DelimiterSegmenter):
        return (segmenter.delimiter,)
    if isinstance(segmenter, ReActSegmenter):
        return ("\nObservation:",)
    if isinstance(segmenter, ToolCallSegmenter):
        return (segmenter.close_tag,)
    return ()


def step_stops(settings: DecodeSettings) -> tuple[str, ...]:
    """The segmenter's stop hints and the caller's stop strings, without repeats."""
    return tuple(dict.fromkeys(stop_hints(settings.segmenter) + settings.stop))


class OpenAICompatibleClient:
    """POSTs JSON to an OpenAI-compatible server with timeouts and bounded retries.

    Retries (with jittered exponential backoff) cover connection failures, timeouts, 429 and 5xx;
    any other 4xx is the request's fault and raises at once with the server's message.
    """

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_connections: int = 64,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https://, got {base_url!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_connections = max_connections
        self._client: httpx.Client | None = None

    @property
    def client(self) -> httpx.Client:
        if self._client is None:
            import httpx

            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            self._client = httpx.Client(
                timeout=self.timeout,
                headers=headers,
                limits=httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                ),
            )
        return self._client

    def post(self, path: str, payload: dict[str, Any]) -> dict[str, Any]:
        import httpx

        url = self.base_url + path
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(4.0, 0.25 * 2 ** (attempt - 1)) * (0.5 + random.random()))
            try:
                resp = self.client.post(url, json=payload)
            except httpx.TransportError as err:  # refused, reset, timeout, DNS
                last = err
                log.warning("request to %s failed (%s), attempt %d", url, err, attempt + 1)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                last = EndpointError(f"{url} answered {resp.status_code}: {_message(resp)}")
                log.warning("%s, attempt %d", last, attempt + 1)
                continue
            if resp.status_code >= 400:
                raise EndpointError(f"{url} answered {resp.status_code}: {_message(resp)}")
            try:
                data = resp.json()
            except ValueError as err:
                raise EndpointError(f"{url} answered malformed data (not JSON): {err}") from err
            if not isinstance(data, dict):
                raise EndpointError(f"{url} answered malformed data: a JSON object was expected")
            return data
        if isinstance(last, EndpointError):
            raise EndpointError(f"{last} (after {self.max_retries + 1} attempts)")
        raise EndpointUnreachable(
            f"cannot reach the server at {self.base_url} after {self.max_retries + 1} attempts:"
            f" {last}"
        )

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        return str(err.get("message", err) if isinstance(err, dict) else err)[:500]
    except ValueError:
        return resp.text[:500]


@dataclass
class _Completion:
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
        generator: torch.Generator | None,
        *,
        n: int = 1,
        logprobs: bool = False,
    ) -> list[_Completion]:
        """One step's request: the step's budget and sampling, the boundary as stop strings,
        and a seed drawn from the generation's generator when sampling."""
        import torch

        seed = None
        if generator is not None and settings.temperature > 0:
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        return self.complete(
            prompt,
            so_far,
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            top_p=settings.top_p,
            stop=step_stops(settings),
            n=n,
            logprobs=logprobs,
            seed=seed,
        )

    def complete(
        self,
        prompt: str,
        so_far: str,
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        stop: tuple[str, ...],
        n: int = 1,
        logprobs: bool = False,
        seed: int | None = None,
    ) -> list[_Completion]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
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

    def _read(self, data: dict[str, Any], stop: tuple[str, ...], n: int) -> list[_Completion]:
        where = f"{self.http.base_url} ({self.model})"
        try:
            choices = sorted(data["choices"], key=lambda c: c.get("index", 0))
            usage = data.get("usage") or {}
            out = []
            for c in choices:
                if self.api == "completions":
                    text = c["text"]
                    lp = c.get("logprobs") or {}
                    offsets = lp.get("text_offset")
                    logprobs = lp.get("token_logprobs")
                else:
                    text = c["message"]["content"] or ""
                    lp = (c.get("logprobs") or {}).get("content")
                    logprobs = [t["logprob"] for t in lp] if lp else None
                    offsets = None
                    if lp:
                        offsets, pos = [], 0
                        for t in lp:
                            offsets.append(pos)
                            pos += len(t["token"])
                if not isinstance(text, str):
                    raise TypeError("text is not a string")
                finish = str(c.get("finish_reason") or "stop")
                reason = c.get("stop_reason")
                stopped = isinstance(reason, str) and reason in stop
                if stopped and not text.endswith(reason):
                    text += reason  # the server cut the stop string off: put the boundary back
                elif finish == "stop" and any(text.endswith(s) for s in stop):
                    stopped = True
                if offsets is not None:
                    p0 = offsets[0] if offsets else 0
                    offsets = [int(o) - p0 for o in offsets]
                out.append(
                    _Completion(
                        text=text,
                        finish=finish,
                        stopped_at=stopped,
                        tokens=int(usage.get("completion_tokens", 0)) // max(len(choices), 1),
                        prompt_tokens=int(usage.get("prompt_tokens", 0)),
                        offsets=offsets,
                        logprobs=[float(x) for x in logprobs] if logprobs else None,
                    )
                )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise EndpointError(f"{where} answered malformed data: {err!r}") from err
        if len(out) != n:
            raise EndpointError(f"{where} answered {len(out)} choices, {n} were asked for")
        return out


def _to_candidate(
    c: _Completion, settings: DecodeSettings, eos_id: int | None = None
) -> tuple[Candidate, int]:
    """Cut a completion at the step boundary; returns the candidate and its token count."""
    cut = cut_text(c.text, settings.segmenter, settings.stop, settings.stop_tail)
    if cut is not None:
        reach, text, finish = cut
    elif c.finish == "length":
        reach, text, finish = len(c.text), c.text, "max_step_tokens"
    else:  # the model ended its answer (EOS) without a boundary
        reach, text, finish = len(c.text), c.text, "eos"
    if c.offsets is not None and c.offsets:
        tokens = max(1, sum(1 for o in c.offsets if o < reach)) if reach else 0
    elif reach < len(c.text) and c.text:
        tokens = math.ceil(c.tokens * reach / len(c.text))
    else:
        tokens = c.tokens
    cand = Candidate(ids=[], text=text, finish=finish, eos=finish == "eos", eos_id=eos_id)
    cand.count = tokens
    return cand, tokens


class EndpointTarget(_Endpoint):
    """The target behind an OpenAI-compatible server.

    Args:
        base_url: the server root, e.g. ``http://gpu-node:8000`` (``/v1/...`` is appended).
        model: the served model's name.
        api: ``"completions"`` (the prompt text continued as is) or ``"chat"`` (the prompt as a
            user message and the steps so far continued as the assistant turn; needs vLLM's
            ``continue_final_message``).
        api_key: sent as a bearer token; default: the ``api_key_env`` environment variable.
        timeout: seconds per request; max_retries: extra attempts on connection errors, 429, 5xx.
    """

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> EndpointTargetSession:
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return EndpointTargetSession(self, prompt)


class EndpointTargetSession:
    def __init__(self, backend: EndpointTarget, prompt: str) -> None:
        self.backend = backend
        self.prompt = prompt
        self.so_far = ""
        self.prompt_tokens = 0  # known after the first request

    def append(self, text: str, ids: list[int] | None) -> None:
        self.so_far += text

    def write_step(
        self,
        settings: DecodeSettings,
        generator: torch.Generator | None,
        assistant: object | None = None,
    ) -> Candidate:
        c = self.backend.request_step(self.prompt, self.so_far, settings, generator)[0]
        self.prompt_tokens = self.prompt_tokens or c.prompt_tokens
        cand, _ = _to_candidate(c, settings)
        self.so_far += cand.text
        return cand


class EndpointDraft(_Endpoint):
    """A draft behind an OpenAI-compatible server: confidence-only (no attention over HTTP).

    k candidates come from one request with ``n=k`` and token log-probabilities; the most
    consistent candidate is the medoid under word-set Jaccard similarity (no hidden states).
    """

    supports_grounding = False

    def start(
        self, prompt: str, config: SpecGuardConfig, *, add_special_tokens: bool = True
    ) -> EndpointDraftSession:
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return EndpointDraftSession(self, prompt)


class EndpointDraftSession:
    def __init__(self, backend: EndpointDraft, prompt: str) -> None:
        self.backend = backend
        self.prompt = prompt
        self.so_far = ""
        self.prompt_tokens = 0
        self._logprobs: dict[int, list[float]] = {}
        self._pending: Candidate | None = None

    def propose(
        self, settings: DecodeSettings, generator: torch.Generator | None
    ) -> list[Candidate]:
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
            cand, n = _to_candidate(c, settings)
            self._logprobs[id(cand)] = c.logprobs[: max(n, 1)]
            cands.append(cand)
        order = jaccard_medoid_order([c.text for c in cands])
        return [cands[i] for i in order]

    def score(self, candidate: Candidate) -> StepSignals:
        import torch

        if self._pending is not None:
            raise RuntimeError("score() called twice without accept() or reject()")
        lps = self._logprobs.get(id(candidate))
        if not lps:
            raise ValueError("cannot score a step without token logprobs")
        self._pending = candidate
        t = torch.tensor(lps)
        return StepSignals(confidence=float(t.min()), grounding=None, logprobs=t)

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
        self.so_far += text


def jaccard_medoid_order(texts: list[str]) -> list[int]:
    """Candidate order with the medoid first: ``argmax_j sum_{l != j} J(w_j, w_l)`` over word
    sets (ties keep sampling order). The loop selects index 0 when no embeddings exist."""
    words = [set(t.split()) for t in texts]

    def jac(a: set[str], b: set[str]) -> float:
        return len(a & b) / len(a | b) if a | b else 1.0

    score = [sum(jac(w, v) for j, v in enumerate(words) if j != i) for i, w in enumerate(words)]
    best = max(range(len(texts)), key=lambda i: (score[i], -i)) if texts else 0
    return [best] + [i for i in range(len(texts)) if i != best]


class LangChainTarget:
    """Any LangChain language model as the target, one step per call.

    A `BaseLLM` continues ``prompt + steps so far`` directly. A chat model gets the prompt as a
    human message and the steps so far as a trailing AI message to continue (providers that
    accept an assistant prefill, e.g. Anthropic or vLLM's ``continue_final_message``). The step
    boundary goes in as ``stop``; the answer is cut again by the segmenter.
    """

    def __init__(self, model: Any, *, name: str | None = None) -> None:
        from langchain_core.language_models import BaseChatModel, BaseLLM

        if not isinstance(model, (BaseChatModel, BaseLLM)):
            raise TypeError(
                f"LangChainTarget needs a LangChain chat model or LLM, got {type(model).__name__}"
            )
        self.model = model
        self.name = name or str(
            getattr(model, "model_name", None) or getattr(model, "model", None) or model._llm_type
        )

    def start(self, prompt: str, *, add_special_tokens: bool = True) -> LangChainTargetSession:
        if not prompt.strip():
            raise ValueError("prompt is empty")
        return LangChainTargetSession(self, prompt)


class LangChainTargetSession:
    def __init__(self, backend: LangChainTarget, prompt: str) -> None:
        self.backend = backend
        self.prompt = prompt
        self.so_far = ""
        self.prompt_tokens = 0

    def append(self, text: str, ids: list[int] | None) -> None:
        self.so_far += text

    def write_step(
        self,
        settings: DecodeSettings,
        generator: torch.Generator | None,
        assistant: object | None = None,
    ) -> Candidate:
        from langchain_core.language_models import BaseLLM
        from langchain_core.messages import AIMessage, HumanMessage

        stop = list(step_stops(settings)) or None
        model = self.backend.model
        tokens = 0
        if isinstance(model, BaseLLM):
            text = model.invoke(self.prompt + self.so_far, stop=stop)
        else:
            messages: list[Any] = [HumanMessage(self.prompt)]
            if self.so_far:
                messages.append(AIMessage(self.so_far))
            reply = model.invoke(messages, stop=stop)
            text = reply.text if hasattr(reply, "text") else str(reply.content)
            usage = getattr(reply, "usage_metadata", None) or {}
            tokens = int(usage.get("output_tokens", 0))
            self.prompt_tokens = self.prompt_tokens or int(usage.get("input_tokens", 0))
        if not isinstance(text, str):
            raise EndpointError(f"{self.backend.name} returned {type(text).__name__}, not text")
        text = _restore_boundary(text, settings.segmenter)
        finish = "stop"
        c = _Completion(text, finish, False, tokens or max(1, len(text) // 4), 0, None, None)
        cand, _ = _to_candidate(c, settings)
        self.so_far += cand.text
        return cand


def _restore_boundary(text: str, segmenter: StepSegmenter) -> str:
    """Put back the boundary a provider cut off with its stop string (it never returns it).

    Empty text means the model ended its answer; a delimiter is restored only after text, and a
    tool-call close tag only after an open one.
    """
    from ..segmentation import DelimiterSegmenter, ToolCallSegmenter

    if not text.strip():
        return text
    if isinstance(segmenter, DelimiterSegmenter) and not text.endswith(segmenter.delimiter):
        return text + segmenter.delimiter
    if (
        isinstance(segmenter, ToolCallSegmenter)
        and segmenter.open_tag in text
        and segmenter.close_tag not in text[text.rfind(segmenter.open_tag) :]
    ):
        return text + segmenter.close_tag
    return text
