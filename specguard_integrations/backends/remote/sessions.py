"""The sessions of the endpoint backends: plain text, what the server is asked to continue,
so nothing needs rolling back when a draft step is rejected."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from ...engine.backends import UNBOUNDED, DecodeSettings, StepSignals, TargetSession
from ...engine.candidate import Candidate
from ...engine.selection import jaccard_medoid
from ...errors import EndpointError, EndpointReplyError, InvalidInputError, StateError
from ...types import ENDS_GENERATION
from .replies import Completion, to_candidate

if TYPE_CHECKING:
    from ...constraint.text import TextChecker
    from ...engine.backends import Rng


class StepWriter(Protocol):
    """What a session asks of its endpoint backend (`endpoint._Endpoint`)."""

    @property
    def where(self) -> str: ...

    def request_step(
        self,
        prompt: str,
        so_far: str,
        settings: DecodeSettings,
        generator: Rng,
        *,
        n: int = 1,
        logprobs: bool = False,
    ) -> list[Completion]: ...

    def step_logprobs(
        self, prompt: str, so_far: str, step: str, deadline: float | None
    ) -> list[float]: ...


# steps in a row with no text that end a generation with an error (a server that keeps
# answering nothing, e.g. 0-token "length" replies, would otherwise run to max_steps)
MAX_EMPTY_STEPS = 3
# the confidence of a remote draft step that breaks the constraint: below any real one
BROKEN = -1e9
_ENDS = tuple(ENDS_GENERATION)
# ends after which the constrained text must be complete (a filter's cut says it is not)
_CLEAN_ENDS = _ENDS[:-1]


class TextSession:
    """A session that is only text: what the server is asked to continue."""

    device = "cpu"
    vocab_id: str | None = None
    tokens_left = UNBOUNDED
    local = False  # each call waits on the server
    where = "the server"  # how errors name it

    def __init__(self, prompt: str) -> None:
        self.prompt = prompt
        self.so_far = ""
        self.prompt_tokens = 0  # known after the first request
        self.cached_tokens = 0  # of them, what the engine read from its prefix cache
        self.empty = 0  # steps in a row without text
        self.checker: TextChecker | None = None  # the constraint, checked on each step

    def first_reply(self, c: Completion) -> None:
        """The prompt's token count and what of it the engine had cached, from the first reply
        that reports them."""
        if not self.prompt_tokens and c.prompt_tokens:
            self.prompt_tokens, self.cached_tokens = c.prompt_tokens, c.cached_tokens

    def finish(self, *, read: bool = False) -> None:
        """Nothing kept here: the engine keeps its own prefix cache (and reads the committed
        text with the next request's prefix)."""

    def count_empty(self, steps: list[Candidate]) -> None:
        """`EndpointReplyError` after `MAX_EMPTY_STEPS` answers in a row with no text (or only
        whitespace: a boundary alone) that did not end the generation."""
        if any(c.text.strip() or c.finish in _ENDS for c in steps):
            self.empty = 0
            return
        self.empty += 1
        if self.empty >= MAX_EMPTY_STEPS:
            raise EndpointReplyError(
                f"{self.where} answered {self.empty} empty steps in a row"
                f" (finish {steps[0].finish!r}): the generation cannot go on"
            )

    def append(self, text: str, ids: list[int] | None) -> None:
        self.so_far += text
        if text.strip():
            self.empty = 0
        if self.checker is not None:  # an accepted draft step, sampled under the constraint
            self.checker.follow(text)

    def complete(self, settings: DecodeSettings, generator: Rng) -> Completion:
        """One request continuing the text so far (targets implement it)."""
        raise NotImplementedError

    def write_step(
        self, settings: DecodeSettings, generator: Rng, assist: object = None
    ) -> Candidate:
        """5. The fallback step: one completion, cut at the step boundary, checked against the
        constraint if one was asked, appended."""
        c = self.complete(settings, generator)
        self.first_reply(c)
        cand = to_candidate(c, settings)
        self.count_empty([cand])
        self.check(settings, cand)
        self.so_far += cand.text
        return cand

    def check(self, settings: DecodeSettings, step: Candidate) -> None:
        """`EndpointReplyError` when a step breaks the constraint, or ends the generation before
        the constrained text is complete: a server's text is never passed on unchecked, even
        where the request carried the engine's own field (`profiles.structured_fields`)."""
        if settings.constraint is None:
            return
        from ...constraint.text import TextChecker

        if self.checker is None:
            self.checker = TextChecker(settings.constraint)
            self.checker.follow(self.so_far)
        why = self.checker.follow(step.text)
        if why is None and step.finish in _CLEAN_ENDS and not self.checker.complete:
            why = f"the generation ended ({step.finish}) before the constrained text was complete"
        if why is not None:
            raise EndpointReplyError(
                f"{self.where} answered a step that breaks the {settings.constraint.kind}"
                f" constraint: {why}"
            )


class TextTargetSession(TextSession):
    """A target session over text, which can verify a step when its backend gives the step's
    log-probabilities (`step_logprobs`)."""

    def __init__(self, prompt: str) -> None:
        super().__init__(prompt)
        self._verified: str | None = None

    def step_logprobs(self, step: str, deadline: float | None) -> list[float]:
        raise EndpointError(f"{self.where} cannot give a step's log-probabilities")

    def verify(
        self, text: str, ids: list[int] | None, deadline: float | None, *, eos: bool = False
    ) -> list[float]:
        """The step's log-probabilities, in the server's tokenizer (an end of sequence is not
        text a server can be sent: a step's EOS is not scored)."""
        if self._verified is not None:
            raise StateError("verify() called twice without accept() or reject()")
        logprobs = self.step_logprobs(text, deadline) if text else []
        self._verified = text
        return logprobs

    def accept(self) -> None:
        if self._verified is None:
            raise StateError("accept() without a verified step")
        text, self._verified = self._verified, None
        self.append(text, None)

    def reject(self) -> None:
        if self._verified is None:
            raise StateError("reject() without a verified step")
        self._verified = None


class EndpointTargetSession(TextTargetSession):
    def __init__(self, backend: StepWriter, prompt: str) -> None:
        super().__init__(prompt)
        self.backend = backend
        self.where = backend.where

    def complete(self, settings: DecodeSettings, generator: Rng) -> Completion:
        return self.backend.request_step(self.prompt, self.so_far, settings, generator)[0]

    def step_logprobs(self, step: str, deadline: float | None) -> list[float]:
        return self.backend.step_logprobs(self.prompt, self.so_far, step, deadline)


class EndpointDraftSession(TextSession):
    def __init__(self, backend: StepWriter, prompt: str) -> None:
        super().__init__(prompt)
        self.backend = backend
        self.where = backend.where
        self._logprobs: dict[int, list[float]] = {}
        self._pending: Candidate | None = None
        self._broken: set[int] = set()  # candidates that break the constraint

    def shares_vocab_with(self, target: TargetSession) -> bool:
        return False

    def assist(self) -> None:
        return None

    def propose(self, settings: DecodeSettings, generator: Rng) -> list[Candidate]:
        completions = self.backend.request_step(
            self.prompt, self.so_far, settings, generator, n=settings.k, logprobs=True
        )
        cands, self._logprobs, self._broken = [], {}, set()
        for c in completions:
            self.first_reply(c)
            if c.logprobs is None:
                raise EndpointError(
                    f"{self.backend.where} returned no token logprobs: a remote draft needs"
                    " them for its confidence signal"
                )
            cand = to_candidate(c, settings)
            self._logprobs[id(cand)] = c.logprobs[: max(cand.num_tokens, 1)]
            if not self._fits(settings, cand):  # never accepted: the lowest confidence there is
                self._logprobs[id(cand)] = [BROKEN]
                self._broken.add(id(cand))
            cands.append(cand)
        self.count_empty(cands)
        return cands

    def _fits(self, settings: DecodeSettings, cand: Candidate) -> bool:
        """Whether a candidate keeps the text valid under the constraint (a remote draft
        samples unconstrained; what breaks it is rejected, and the target writes the step)."""
        if settings.constraint is None:
            return True
        from ...constraint.text import TextChecker

        if self.checker is None:
            self.checker = TextChecker(settings.constraint)
            self.checker.follow(self.so_far)
        probe = self.checker.copy()
        if probe.follow(cand.text) is not None:
            return False
        return cand.finish not in _CLEAN_ENDS or probe.complete

    def select(self, candidates: list[Candidate]) -> int:
        return jaccard_medoid([c.text for c in candidates])

    def score(self, candidate: Candidate) -> StepSignals:
        if self._pending is not None:
            raise StateError("score() called twice without accept() or reject()")
        lps = self._logprobs.get(id(candidate))
        if not lps:
            raise InvalidInputError("cannot score a step without token logprobs")
        self._pending = candidate
        return StepSignals(confidence=min(lps), grounding=None)

    def accept(self) -> None:
        if self._pending is None:
            raise StateError("accept() without a scored step")
        if id(self._pending) in self._broken:
            raise EndpointReplyError(
                f"{self.where}: a draft step that breaks the constraint was accepted (tau <= 0)"
            )
        self.so_far += self._pending.text
        if self.checker is not None:
            self.checker.follow(self._pending.text)
        self._pending = None

    def reject(self) -> None:
        if self._pending is None:
            raise StateError("reject() without a scored step")
        self._pending = None

    def append(self, text: str, ids: list[int] | None) -> None:
        if self._pending is not None:
            raise StateError("append() while a scored step is pending")
        super().append(text, ids)
