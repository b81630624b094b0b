"""Backends that reach a model behind an OpenAI-compatible server: the scale-out path.

- `EndpointTarget`: the target served by vLLM, SGLang, TGI, llama.cpp, Ollama, ... (or
  `specguard serve --mode plain`). Each fallback step is one completions (or chat) request over
  the text so far, with the step boundary sent as stop strings, and the step cut again here by
  the same segmenter the local models use, so a step means the same thing on both sides. What
  differs per engine (is the stop string kept, which field names it, n, chat continuation) is
  one profile in `profiles`, read off the server once.
- `EndpointDraft`: a draft behind such a server. It returns token log-probabilities but no
  attention, so SpecGuard runs confidence-only and every record says so; the candidates are
  selected by their word-set Jaccard medoid.

Sessions are plain text, so nothing needs rolling back when a draft step is rejected.
"""

from __future__ import annotations

import contextvars
import logging
import os
from typing import TYPE_CHECKING, Any, Literal

from ...engine.backends import DecodeSettings, SignalSettings, check_prompt_text
from ...errors import EndpointError, EndpointReplyError, InvalidInputError
from . import profiles
from .client import MAX_BODY_BYTES, OpenAICompatibleClient
from .profiles import Engine, EngineProfile
from .replies import (
    LENGTH_SLACK_TOKENS,
    MAX_CHARS_PER_TOKEN,
    Completion,
    check_length,
    end_reason,
    read_echo,
    settled,
    step_stops,
)
from .sessions import EndpointDraftSession, EndpointTargetSession
from .wire import Rendering, Wire

if TYPE_CHECKING:
    from ...engine.backends import Rng

log = logging.getLogger(__name__)

Api = Literal["completions", "chat"]


class _Endpoint:
    """What the endpoint target and draft share: the engine's profile, the request and its
    reading (see `profiles`)."""

    local_model = None  # the model runs on the server, not in this process

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api: Api = "completions",
        engine: Engine = "auto",
        chat_template: Any = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        timeout: float = 60.0,
        max_retries: int = 2,
        max_connections: int = 64,
        max_body_bytes: int = MAX_BODY_BYTES,
        extra_body: dict[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if api not in ("completions", "chat"):
            raise InvalidInputError(f"api must be 'completions' or 'chat', got {api!r}")
        if not model:
            raise InvalidInputError("model: the served model's name is required")
        self.api = api
        self.model = model
        self.name = name or model
        self.extra_body = dict(extra_body or {})
        self._profile = None if engine == "auto" else profiles.profile(engine)
        self.rendering = None if chat_template is None else Rendering(chat_template)
        # the text a locally rendered turn ends with: where the server's chat API would stop
        self.end_of_turn = self.rendering.end_of_turn if self.rendering else ()
        self.http = OpenAICompatibleClient(
            base_url,
            api_key=api_key if api_key is not None else os.environ.get(api_key_env),
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            max_body_bytes=max_body_bytes,
        )

    @property
    def profile(self) -> EngineProfile:
        """The engine's profile: declared, or read off the server on first use (and logged)."""
        return self.detect_engine()

    def detect_engine(self, deadline: float | None = None) -> EngineProfile:
        """`profile`, its probes (when the engine is read off the server) ending by `deadline`
        (monotonic seconds; a generation's start passes its own)."""
        if self._profile is None:
            self._profile, why = profiles.detect(self.http, deadline)
            log.info(
                "%s (%s): engine %s (%s); %s; %s",
                self.http.base_url,
                self.model,
                self._profile.name,
                why,
                "stop matches read from the answer"
                if not self._profile.asks
                else "an ambiguous stop is settled by asking for one more token",
                "n > 1 in one request" if self._profile.n else "k candidates as k requests",
            )
        return self._profile

    def check_chat(self) -> None:
        """A chat API target must be able to continue an assistant turn, or render it here."""
        if self.api == "chat" and self.profile.prefill == "none" and self.rendering is None:
            raise InvalidInputError(
                f"{self.http.base_url} ({self.profile.name}) cannot continue an assistant turn over"
                " /v1/chat/completions: pass chat_template= (the target's tokenizer or its id)"
                " to render turns here and continue over /v1/completions, or use"
                " api='completions'"
            )

    @property
    def where(self) -> str:
        """The server and model, as errors name them."""
        return f"{self.http.base_url} ({self.model})"

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
        """One step: its budget and sampling, the boundary as stop strings, a seed drawn from
        the generation's generator when sampling; n choices (n requests where the engine serves
        one choice per request)."""
        seed = None
        if generator is not None and settings.temperature > 0:
            import torch

            draw = torch.randint(0, 2**31 - 1, (1,), generator=generator, device=generator.device)
            seed = int(draw.tolist()[0])
        stops = step_stops(settings) + self.end_of_turn
        body = self.wire.body(settings, stops, seed, logprobs, starts_constraint=not so_far)
        deadline = settings.deadline
        if n == 1 or self.profile.n:
            return self._answer(prompt, so_far, {**body, "n": n}, stops, n, deadline)
        from concurrent.futures import ThreadPoolExecutor

        def one(i: int) -> Completion:
            each = {**body, "n": 1, **({"seed": seed + i} if seed is not None else {})}
            return self._answer(prompt, so_far, each, stops, 1, deadline)[0]

        with ThreadPoolExecutor(n) as pool:  # each request in the caller's cancellation scope
            jobs = [pool.submit(contextvars.copy_context().run, one, i) for i in range(n)]
            return [job.result() for job in jobs]

    @property
    def wire(self) -> Wire:
        """How this endpoint's requests are written (its engine's profile read first)."""
        chat = self.api == "chat" and self.rendering is None
        rendering = self.rendering if self.api == "chat" else None
        return Wire(self.model, self.profile, self.extra_body, chat, rendering)

    @property
    def _chat(self) -> bool:
        """Whether requests go to /v1/chat/completions (else the text is continued as is)."""
        return self.api == "chat" and self.rendering is None

    def _post(
        self, prompt: str, so_far: str, body: dict[str, Any], deadline: float | None
    ) -> dict[str, Any]:
        path, payload = self.wire.request(prompt, so_far, body)
        return self.http.post(path, payload, deadline)

    def _answer(
        self,
        prompt: str,
        so_far: str,
        body: dict[str, Any],
        stops: tuple[str, ...],
        n: int,
        deadline: float | None,
    ) -> list[Completion]:
        data = self._post(prompt, so_far, body, deadline)
        usage = data.get("usage") or {}
        choices = data.get("choices")
        try:
            if not isinstance(choices, list) or not isinstance(usage, dict):
                raise InvalidInputError("'choices' must be a list and 'usage' an object")
            if not all(isinstance(c, dict) for c in choices):
                raise InvalidInputError("every choice must be an object")
            choices = sorted(choices, key=lambda c: c.get("index", 0))
            read = [
                profiles.read_choice(c, self._chat, self.profile.stop_field, usage) for c in choices
            ]
            cached = profiles.cached_tokens(data)
        except KeyError as err:
            raise self._malformed(f"no field {err} in a choice") from None
        except (TypeError, ValueError, AttributeError) as err:
            raise self._malformed(str(err)) from None
        if len(read) != n:
            raise self._malformed(f"{len(read)} choices, where {n} were asked for")
        for choice in read:  # abort, a parsed tool call or an unknown value raises here
            choice.finish = end_reason(choice.finish, self.where)
        settled = [self._settle(prompt, so_far, c, stops, len(read), deadline) for c in read]
        for c in settled:
            check_length(c, body["max_tokens"], self.where)
            c.cached_tokens = cached
        return settled

    def _malformed(self, what: str) -> EndpointReplyError:
        return EndpointReplyError(f"{self.where} answered malformed data: {what}")

    def _settle(
        self,
        prompt: str,
        so_far: str,
        c: profiles.Choice,
        stops: tuple[str, ...],
        count: int,
        deadline: float | None,
    ) -> Completion:
        """The boundary question answered: did the server stop at one of `stops`?"""
        stop = profiles.matched_stop(c, stops, self.profile)
        if stop is True:  # the engine does not say: ask the model for one more token
            nxt = self._one_more(prompt, so_far + c.text, deadline)
            stop = profiles.stop_after_probe(nxt, stops)
        if stop in self.end_of_turn:  # the turn ended: as EOS, nothing to put back
            stop = None
        return settled(c, stop, count)

    def verify_refusal(self) -> str | None:
        """Why this server cannot give a step's log-probabilities, or None (see `profiles`)."""
        if not self.profile.echo_logprobs:
            return (
                f"{self.where} runs {self.profile.name}, which returns no prompt"
                " log-probabilities (no echo with logprobs on /v1/completions); use"
                " judge='draft', or serve the target with vLLM, SGLang or llama-cpp-python"
            )
        if self._chat:
            return (
                f"{self.where}: prompt log-probabilities are read over /v1/completions; pass"
                " chat_template= (the target's tokenizer or its id) to render turns here"
            )
        return None

    def step_logprobs(
        self, prompt: str, so_far: str, step: str, deadline: float | None
    ) -> list[float]:
        """``log p(s_t | ctx, s_<t)`` of the step's tokens: the server prefills ``ctx + step``
        (its prefix cache holds ctx) and echoes it with logprobs."""
        why = self.verify_refusal()
        if why is not None:
            raise EndpointError(why)
        head = self.wire.text(prompt, so_far)
        body = {
            "model": self.model,
            "prompt": head + step,
            "max_tokens": 1,
            "temperature": 0.0,
            "echo": True,
            "logprobs": 1,
            **self.profile.extra,
            **self.extra_body,
        }
        data = self.http.post("/v1/completions", body, deadline)
        return read_echo(data, head, step, self.where)

    def _one_more(self, prompt: str, text: str, deadline: float | None) -> str:
        """The model's next greedy token after `text` (empty: it ended)."""
        data = self._post(prompt, text, self.wire.probe(), deadline)
        choices = data.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        if not isinstance(first, dict):
            raise self._malformed("the one-token answer has no choice")
        if self._chat:
            message = first.get("message")
            nxt = message.get("content") if isinstance(message, dict) else None
        else:
            nxt = first.get("text")
        if nxt is not None and not isinstance(nxt, str):
            raise self._malformed("the one-token answer's text is not a string")
        if len(nxt or "") > MAX_CHARS_PER_TOKEN * (1 + LENGTH_SLACK_TOKENS):
            raise EndpointReplyError(
                f"{self.where} answered {len(nxt or '')} characters where one token was asked for"
            )
        return nxt or ""


class EndpointTarget(_Endpoint):
    """The target behind an OpenAI-compatible server.

    Args:
        base_url: the server root, e.g. ``http://gpu-node:8000`` (``/v1/...`` is appended).
        model: the served model's name.
        api: ``"completions"`` (the prompt text continued as is) or ``"chat"`` (the prompt as a
            user message and the steps so far continued as the assistant turn).
        engine: ``"auto"`` (read off the server once, and logged), or ``"vllm"``, ``"sglang"``,
            ``"tgi"``, ``"llamacpp"`` (llama.cpp's server), ``"llama-cpp-python"``, ``"ollama"``,
            ``"generic"`` (see `profiles`).
        chat_template: for ``api="chat"`` on an engine that cannot continue an assistant turn
            (llama.cpp, generic): the target's tokenizer (or its id) renders the turn here and
            the step continues over ``/v1/completions``.
        api_key: sent as a bearer token; default: the ``api_key_env`` environment variable.
        timeout: seconds each request may take, connect plus the whole body (a generation's
            own ``timeout`` bounds its requests too); max_retries: extra attempts on refused or
            dropped connections, timeouts, 429 and 5xx (after ``Retry-After``, at most 30 s);
            max_body_bytes: a larger reply is refused unread. docs/scale-out.md, "Failure
            semantics", lists every error.
        extra_body: fields sent with every request (engine-specific sampling options).
    """

    def start(
        self,
        prompt: str,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,
    ) -> EndpointTargetSession:
        """A session (`prefix_cache` is the engine's business: its own count is reported); the
        engine is read off the server now, by the generation's `deadline`."""
        self.detect_engine(deadline)
        self.check_chat()
        return EndpointTargetSession(self, check_prompt_text(prompt))


class EndpointDraft(_Endpoint):
    """A draft behind an OpenAI-compatible server: confidence-only (no attention over HTTP).

    k candidates come from one request with ``n=k`` where the engine serves several choices,
    else from k concurrent requests with seeds ``seed, seed + 1, ...``; each with token
    log-probabilities. The most consistent candidate is the medoid under word-set Jaccard
    similarity (no hidden states). Same arguments as `EndpointTarget`.
    """

    supports_grounding = False

    def start(
        self,
        prompt: str,
        signals: SignalSettings,
        *,
        add_special_tokens: bool = True,
        prefix_cache: int = 0,
        deadline: float | None = None,
    ) -> EndpointDraftSession:
        self.detect_engine(deadline)
        self.check_chat()
        return EndpointDraftSession(self, check_prompt_text(prompt))
