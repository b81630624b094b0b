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
import math
import os
from typing import TYPE_CHECKING, Any, Literal

from ...engine.backends import DecodeSettings, SignalSettings, check_prompt_text
from ...errors import EndpointError, EndpointReplyError, InvalidInputError
from . import profiles
from .client import MAX_BODY_BYTES, OpenAICompatibleClient
from .profiles import Engine, EngineProfile, structured_fields
from .replies import (
    LENGTH_SLACK_TOKENS,
    MAX_CHARS_PER_TOKEN,
    Completion,
    check_length,
    end_reason,
    read_echo,
    step_stops,
)
from .sessions import EndpointDraftSession, EndpointTargetSession

if TYPE_CHECKING:
    from ...engine.backends import Rng

log = logging.getLogger(__name__)

# request fields by which engines constrain a reply (a user's own in extra_body stands)
_GRAMMAR_FIELDS = {
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_grammar",
    "guided_choice",
    "json_schema",
    "regex",
    "ebnf",
    "grammar",
    "response_format",
    "format",
}

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
        self.chat_template = _template(chat_template)
        # the text a locally rendered turn ends with: where the server's chat API would stop
        self.end_of_turn = _end_of_turn(self.chat_template) if self.chat_template else ()
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
        if self._profile is None:
            self._profile, why = profiles.detect(self.http)
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
        if self.api == "chat" and self.profile.prefill == "none" and self.chat_template is None:
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
        body = self._body(settings, stops, seed, logprobs)
        if settings.constraint is not None and not so_far:  # the constrained text starts here
            c = settings.constraint
            fields = structured_fields(self.profile.name, c.kind, c.source, chat=self._chat)
            if not set(self.extra_body) & _GRAMMAR_FIELDS:  # the user's own field stands
                body.update(fields)
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

    def _body(
        self, settings: DecodeSettings, stops: tuple[str, ...], seed: int | None, logprobs: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": settings.max_tokens,
            "temperature": settings.temperature,
            "top_p": settings.top_p,
            **self.profile.extra,
            **self.extra_body,
        }
        if self.profile.keep_stop_param:
            body[self.profile.keep_stop_param] = True
        if stops:
            body["stop"] = list(stops)[:4]  # the OpenAI API takes at most four
        if seed is not None:
            body["seed"] = seed
        if logprobs:
            body["logprobs"] = True if self._chat else 1
            if self._chat:
                body["top_logprobs"] = 0  # some engines return none without it
        return body

    @property
    def _chat(self) -> bool:
        """Whether requests go to /v1/chat/completions (else the text is continued as is)."""
        return self.api == "chat" and self.chat_template is None

    def _post(
        self, prompt: str, so_far: str, body: dict[str, Any], deadline: float | None
    ) -> dict[str, Any]:
        if not self._chat:
            if self.api == "chat":  # rendered here: the turn is continued as text
                prompt = self._rendered(prompt)
            return self.http.post("/v1/completions", {**body, "prompt": prompt + so_far}, deadline)
        messages = [{"role": "user", "content": prompt}]
        if so_far:
            messages.append({"role": "assistant", "content": so_far})
            if self.profile.prefill == "flags":  # vLLM, SGLang: continue instead of a new turn
                body = {**body, "continue_final_message": True, "add_generation_prompt": False}
        return self.http.post("/v1/chat/completions", {**body, "messages": messages}, deadline)

    def _rendered(self, prompt: str) -> str:
        msgs = [{"role": "user", "content": prompt}]
        return str(
            self.chat_template.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        )

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
        text = c.text
        if isinstance(stop, str) and not text.endswith(stop):
            text += stop  # the server cut the boundary off: put it back
        # usage counts all choices together: a choice's own count is its logprob tokens
        own = len(c.tokens) if c.tokens is not None else None
        if count > 1 and own is not None:
            tokens = own
        elif c.completion_tokens is not None:
            tokens = c.completion_tokens // max(count, 1)
        else:  # usage missing: the tokens' count, else an estimate from the text
            tokens = own if own is not None else math.ceil(len(text) / 4)
        return Completion(
            text=text,
            finish=c.finish,
            stopped_at=isinstance(stop, str),
            tokens=tokens,
            prompt_tokens=c.prompt_tokens or 0,
            offsets=c.offsets,
            logprobs=c.logprobs,
            counted=c.tokens is not None or (c.completion_tokens is not None and count == 1),
            reported=(c.completion_tokens or 0) // max(count, 1),
        )

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
        head = (self._rendered(prompt) if self.api == "chat" else prompt) + so_far
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
        probe = {"model": self.model, "max_tokens": 1, "temperature": 0.0, **self.profile.extra}
        data = self._post(prompt, text, {**probe, **self.extra_body}, deadline)
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


def _end_of_turn(tokenizer: Any) -> tuple[str, ...]:
    """The marker a chat template writes after an assistant message (``<|im_end|>``,
    ``<|eot_id|>``, ``<end_of_turn>``), read off a rendering."""
    mark = "SGTURNMARK"
    msgs = [{"role": "user", "content": "x"}, {"role": "assistant", "content": mark}]
    try:
        text = str(tokenizer.apply_chat_template(msgs, tokenize=False))
    except Exception:  # a template that cannot render this has no marker to read
        return ()
    after = text[text.find(mark) + len(mark) :].split("\n")[0].strip() if mark in text else ""
    return (after,) if 0 < len(after) <= 32 else ()


def _template(spec: Any) -> Any:
    """A tokenizer whose chat template renders turns here: given, or loaded by id or path."""
    if spec is None or hasattr(spec, "apply_chat_template"):
        return spec
    from ..local.loading import load_tokenizer

    return load_tokenizer(str(spec))


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
        self, prompt: str, *, add_special_tokens: bool = True, prefix_cache: int = 0
    ) -> EndpointTargetSession:
        """A session (`prefix_cache` is the engine's business: its own count is reported)."""
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
    ) -> EndpointDraftSession:
        self.check_chat()
        return EndpointDraftSession(self, check_prompt_text(prompt))
