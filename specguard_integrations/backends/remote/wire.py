"""What a step request to an OpenAI-compatible server carries, and where it goes: the body
(budget, sampling, the boundary as stop strings, the engine's own fields and a constraint's
field where the constrained text starts) and the path with the prompt (completions: the text as
is, or a chat turn rendered here; chat: a user turn and the assistant turn so far). A chat
template that renders turns here comes from a tokenizer given or loaded by id (`Rendering`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .profiles import EngineProfile, structured_fields

if TYPE_CHECKING:
    from ...engine.backends import DecodeSettings

# request fields by which engines constrain a reply (a user's own in extra_body stands)
GRAMMAR_FIELDS = {
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


class Rendering:
    """A tokenizer whose chat template renders a user turn here (given, or loaded by id or
    path), and the marker its assistant turns end with (where a server's chat API stops)."""

    def __init__(self, spec: Any) -> None:
        self.tokenizer = spec if hasattr(spec, "apply_chat_template") else _load(str(spec))
        self.end_of_turn = _end_of_turn(self.tokenizer)

    def turn(self, prompt: str) -> str:
        """The prompt as a user turn, with the assistant turn opened."""
        msgs = [{"role": "user", "content": prompt}]
        text = self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        return str(text)


def _load(name_or_path: str) -> Any:
    from ..local.loading import load_tokenizer

    return load_tokenizer(name_or_path)


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


@dataclass(frozen=True)
class Wire:
    """How one endpoint's requests are written: its model, profile, extra fields, and whether
    steps go to the chat API (`chat`) or continue text over completions (with `rendering` for
    a chat turn rendered here)."""

    model: str
    profile: EngineProfile
    extra_body: dict[str, Any]
    chat: bool
    rendering: Rendering | None

    def body(
        self,
        settings: DecodeSettings,
        stops: tuple[str, ...],
        seed: int | None,
        logprobs: bool,
        *,
        starts_constraint: bool = False,
    ) -> dict[str, Any]:
        """A step's request body. `starts_constraint`: the constrained text starts with this
        step, which asks the engine for it in its own field (a user's own field stands)."""
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
            body["logprobs"] = True if self.chat else 1
            if self.chat:
                body["top_logprobs"] = 0  # some engines return none without it
        c = settings.constraint
        if starts_constraint and c is not None and not set(self.extra_body) & GRAMMAR_FIELDS:
            body.update(structured_fields(self.profile.name, c.kind, c.source, chat=self.chat))
        return body

    def probe(self) -> dict[str, Any]:
        """The body asking for the model's next greedy token."""
        probe = {"model": self.model, "max_tokens": 1, "temperature": 0.0, **self.profile.extra}
        return {**probe, **self.extra_body}

    def text(self, prompt: str, so_far: str) -> str:
        """The text continued over completions: the prompt (as a rendered turn where the chat
        API is not used) and what was written so far."""
        return (self.rendering.turn(prompt) if self.rendering else prompt) + so_far

    def request(self, prompt: str, so_far: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The path and the JSON of a request continuing `so_far` after `prompt`."""
        if not self.chat:
            return "/v1/completions", {**body, "prompt": self.text(prompt, so_far)}
        messages = [{"role": "user", "content": prompt}]
        if so_far:
            messages.append({"role": "assistant", "content": so_far})
            if self.profile.prefill == "flags":  # vLLM, SGLang: continue instead of a new turn
                body = {**body, "continue_final_message": True, "add_generation_prompt": False}
        return "/v1/chat/completions", {**body, "messages": messages}
