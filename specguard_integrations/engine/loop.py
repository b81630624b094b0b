"""The SpecGuard step loop: propose -> select -> score -> decide -> commit or fall back.

Per step i, with ctx = prompt + accepted steps:

1. propose  k candidate steps from the draft, each up to a step boundary;
2. select   j* = argmax_j sum_{l != j} exp(S[j, l]) over candidate embeddings;
3. score    l = min_t log p_draft(s_t),  g = min_t sum_{j in ctx} R[t, j];
4. decide   r = beta * l~ + (1 - beta) * g~, accept iff r >= tau (the target-verified judge
            first has the target prefill the step and fuses t~ from its log-probabilities);
5. commit   the draft step, or discard it and let the target write the step from ctx.

Generation stops at EOS, a final-answer line, a tool call, a stop sequence, `max_steps` or
`max_new_tokens`. The loop knows the backends only by their protocols (`backends.py`) and the
verdict only by its `Judge` (`policy.py`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Generator, Sequence
from typing import TYPE_CHECKING, Any

from ..config import SpecGuardConfig
from ..constraint import Constraint
from ..errors import GenerationTimeout, InvalidInputError, InvalidTypeError
from ..types import (
    ENDS_GENERATION,
    FinishReason,
    GenerationResult,
    PhaseTimes,
    StepRecord,
    StepSource,
)
from .arguments import (
    check_timeout,
    normalise_stop,
    resolve_constraint,
    segmenter_of,
)
from .backends import (
    DecodeSettings,
    DraftModel,
    DraftSession,
    NoRuntime,
    Runtime,
    SignalSettings,
    StepSignals,
    TargetModel,
    TargetSession,
    TextModel,
    check_prompt_text,
)
from .policy import Judge, Verdict, judge_for, needs_target
from .transcript import StepStream, Transcript, record

if TYPE_CHECKING:
    import torch

    from .candidate import Candidate

log = logging.getLogger(__name__)


class SpecGuardEngine:
    """Step-level speculative decoding with a draft verified by its own attention and confidence.

    Args:
        draft: the small model (any `DraftModel`; the package's `SpecGuard` also takes a
            `LocalCausalLM`).
        target: the large model (any `TargetModel`, likewise).
        config: defaults for every call; a call may pass its own.
        judge: step 4. None (default): the judge the call's config names (`config.judge`:
            SpecGuard's fused draft signals, `FusionJudge`, or the target-verified
            `TargetJudge`); `RewardModelJudge(prm)` is reward-guided speculative decoding.
        runtime: what groups concurrent generations' model calls (None: nothing does; the
            package's `SpecGuard` passes the step scheduler).
    """

    def __init__(
        self,
        draft: DraftModel,
        target: TargetModel,
        config: SpecGuardConfig | None = None,
        *,
        judge: Judge | None = None,
        runtime: Runtime | None = None,
    ) -> None:
        for role, model, kind in (("draft", draft, DraftModel), ("target", target, TargetModel)):
            if not isinstance(model, kind):
                raise InvalidTypeError(
                    f"{role} must be a {kind.__name__} (a backend with start()), got"
                    f" {type(model).__name__}; for a LocalCausalLM or a model id use"
                    " specguard_integrations.SpecGuard"
                )
        self.draft = draft
        self.target = target
        self.config = config or SpecGuardConfig()
        self.judge: Judge | None = judge
        self.runtime: Runtime = runtime or NoRuntime()
        if not self.draft.supports_grounding:
            log.warning(
                "draft %s gives no attention: SpecGuard runs confidence-only", self.draft.name
            )

    # ------------------------------------------------------------------ the pair
    def local_models(self) -> list[TextModel]:
        """The pair's models that run in this process, target first."""
        found = (self.target.local_model, self.draft.local_model)
        return [m for i, m in enumerate(found) if m is not None and m not in found[:i]]

    def chat_model(self) -> TextModel:
        """The model whose chat template renders prompts: the target's, else the draft's."""
        for m in self.local_models():
            if m.has_chat_template:
                return m
        raise InvalidInputError("neither model has a tokenizer with a chat template")

    @property
    def special_texts(self) -> tuple[str, ...]:
        """Special-token texts (role markers, end of turn) that never belong in content."""
        models = self.local_models()
        return models[0].special_texts if models else ()

    @property
    def context_window(self) -> int | None:
        """The smallest context window of the pair's local models (None: none is local)."""
        windows = [m.context_window for m in self.local_models()]
        return min(windows) if windows else None

    # ------------------------------------------------------------------ public
    def generate(self, prompt: str, **options: Any) -> GenerationResult:
        """Run the step loop to the end and return the text, the step records and totals.

        `options` are those of `stream` (config, stop, add_special_tokens, timeout, constraint).
        """
        stream = self.stream(prompt, **options)
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def generate_batch(
        self,
        prompts: Sequence[str],
        *,
        configs: SpecGuardConfig | Sequence[SpecGuardConfig | None] | None = None,
        stop: str | list[str] | tuple[str, ...] | None = None,
        max_concurrency: int = 32,
        return_exceptions: bool = False,
        timeout: float | None = None,
    ) -> list[GenerationResult | Exception]:
        """Generate for every prompt at once: the generations run concurrently and their model
        calls are grouped by the runtime (the step scheduler, `runtime/scheduler.py`, for the
        package's `SpecGuard`), so the draft and the target run one forward for many requests.
        Results come in the order of `prompts`.

        Args:
            prompts: a list of prompt strings (not one string).
            configs: one config for all, or one per prompt (None: the engine's).
            stop: stop sequences, the same for every prompt.
            max_concurrency: generations running at once. On a CPU, where grouped forwards
                save little, 1 runs the prompts one after another (docs/scale-out.md).
            return_exceptions: put a failed prompt's exception in its place (an empty prompt,
                one over the context window, a failed model call, a timeout) instead of
                raising the first one (after every other prompt has finished either way).
                Arguments of the wrong type raise at once, before anything runs.
            timeout: seconds each generation may run, counted from its own start (time spent
                queued behind `max_concurrency` does not count; waiting for a grouped call
                does).

        Returns:
            One `GenerationResult` per prompt, in order; with `return_exceptions`, an
            exception in the place of each prompt that failed.
        """
        from .batch import generate_batch

        return generate_batch(
            self.generate,
            prompts,
            configs=configs,
            stop=stop,
            max_concurrency=max_concurrency,
            return_exceptions=return_exceptions,
            timeout=timeout,
        )

    def stream(
        self,
        prompt: str,
        *,
        config: SpecGuardConfig | None = None,
        stop: str | list[str] | tuple[str, ...] | None = None,
        add_special_tokens: bool = True,
        timeout: float | None = None,
        constraint: Constraint | None = None,
    ) -> StepStream:
        """Yield each step record as soon as it is decided; `.result` holds the totals after.

        `timeout`: seconds the generation may run; past it, it stops before the next step and
        raises `TimeoutError` (the steps already yielded stand); a request in flight to a remote
        model is bounded by it too.
        `constraint`: a JSON schema, regex or Lark grammar (`specguard_integrations.Constraint`) the
        whole generated text must match (else the config's `constraint`); every sampler (draft
        candidates, the target's fallback) samples under it (docs/structured-output.md).
        """
        check_prompt_text(prompt)
        stops = normalise_stop(stop)
        check_timeout(timeout)
        if config is not None and not isinstance(config, SpecGuardConfig):
            raise InvalidTypeError(
                f"config must be a SpecGuardConfig, got {type(config).__name__}"
                " (for a few changes: engine.config.merged(k=..., tau=...))"
            )
        cfg = config or self.config
        constraint = resolve_constraint(constraint, cfg)
        self.judge_of(cfg)  # a judge the target cannot serve is refused before anything runs
        return StepStream(self._run(prompt, cfg, stops, add_special_tokens, timeout, constraint))

    def judge_of(self, cfg: SpecGuardConfig) -> Judge:
        """The engine's judge, else the one `cfg.judge` names; `ValueError` when it reads the
        target's log-probabilities and the target cannot give them, or when both are set."""
        if self.judge is not None and cfg.judge != "draft":
            raise InvalidInputError(
                f"judge={type(self.judge).__name__} was given and the config names judge="
                f"{cfg.judge!r}: choose one"
            )
        judge = self.judge or judge_for(cfg)
        if judge.reads_target:
            why = self.target.verify_refusal()
            if why is not None:
                raise InvalidInputError(f"the target-verified judge cannot run: {why}")
        return judge

    # ------------------------------------------------------------------ loop
    def _run(self, *args: Any) -> Generator[StepRecord, None, GenerationResult]:
        """`_steps(*args)`, counted as a generation whose model calls may join others'."""
        with self.runtime.generation():
            result = yield from self._steps(*args)
        return result

    def _steps(
        self,
        prompt: str,
        cfg: SpecGuardConfig,
        stop: tuple[str, ...],
        special: bool,
        timeout: float | None,
        constraint: Constraint | None = None,
    ) -> Generator[StepRecord, None, GenerationResult]:
        t0, t_start = time.perf_counter(), time.monotonic()
        budget = cfg.prefix_cache_bytes
        signals = SignalSettings.from_config(cfg)
        until = None if timeout is None else t_start + timeout
        draft = self.draft.start(
            prompt, signals, add_special_tokens=special, prefix_cache=budget, deadline=until
        )
        target = self.target.start(
            prompt, add_special_tokens=special, prefix_cache=budget, deadline=until
        )
        ended = False
        try:
            result = yield from self._loop(
                (prompt, cfg, stop, timeout, constraint), draft, target, (t0, t_start)
            )
            ended = True
        finally:  # what the generation read is kept for later calls (never on a pending step);
            # after a clean end the target reads what it committed unread, for the next turn
            draft.finish()
            in_time = until is None or time.monotonic() < until
            target.finish(read=ended and budget > 0 and in_time)
        return result

    def _loop(
        self,
        call: tuple[str, SpecGuardConfig, tuple[str, ...], float | None, Constraint | None],
        draft: DraftSession,
        target: TargetSession,
        clocks: tuple[float, float],
    ) -> Generator[StepRecord, None, GenerationResult]:
        """The steps of one generation (its sessions started, its clocks running)."""
        prompt, cfg, stop, timeout, constraint = call
        t0, t_start = clocks
        gen_d, gen_t = _generators(cfg.seed, draft.device, target.device)
        segmenter = segmenter_of(cfg)
        judge = self.judge_of(cfg)
        done = Transcript(stop)
        finish: FinishReason = "max_steps"
        for i in range(cfg.max_steps):
            if timeout is not None and time.perf_counter() - t0 > timeout:
                raise GenerationTimeout(f"generation ran past timeout={timeout}s after {i} steps")
            room = min(draft.tokens_left, target.tokens_left)
            budget = min(cfg.max_step_tokens, cfg.max_new_tokens - done.tokens, room)
            if budget <= 0:
                finish = "max_new_tokens" if done.tokens >= cfg.max_new_tokens else "context_window"
                break
            times = PhaseTimes()
            settings = DecodeSettings(
                cfg.k,
                cfg.temperature,
                cfg.top_p,
                budget,
                segmenter,
                stop,
                done.tail,
                deadline=None if timeout is None else t_start + timeout,
                constraint=constraint,
            )
            with times.timed("propose"), self._away(draft):  # 1. propose
                candidates = draft.propose(settings, gen_d)
            with times.timed("select"):  # 2. select
                j = draft.select(candidates)
            with times.timed("score"):  # 3. score
                sig = draft.score(candidates[j])
            context = prompt + "".join(done.pieces)  # 4. decide
            sig, verdict = self._decide(
                judge, sig, candidates[j], draft, target, context, cfg, settings, times
            )
            # 5. commit or fall back
            step, source = self._commit_or_fall_back(
                verdict,
                candidates[j],
                draft,
                target,
                settings,
                cfg,
                gen_t,
                times,
                verified=sig.target_logprobs is not None,
            )
            done.add(record(i, step, source, candidates, j, sig, verdict, cfg, times))
            with self.runtime.paused():  # the consumer has the step; batches need not wait for it
                yield done.records[-1]
            if step.finish in ENDS_GENERATION:
                finish = ENDS_GENERATION[step.finish]
                break
            if done.tokens >= cfg.max_new_tokens:
                finish = "max_new_tokens"
                break
        return GenerationResult(
            prompt=prompt,
            text=done.text(finish),
            steps=done.records,
            finish_reason=finish,
            # a remote target reports its count only once called; until then the draft's count
            prompt_tokens=target.prompt_tokens or draft.prompt_tokens,
            draft_prompt_tokens=draft.prompt_tokens,
            # prompt tokens read from a prefix cache, counted where prompt_tokens are
            cached_tokens=target.cached_tokens if target.prompt_tokens else draft.cached_tokens,
            draft_cached_tokens=draft.cached_tokens,
            wall_time=time.perf_counter() - t0,
        )

    # 4. decide
    def _decide(
        self,
        judge: Judge,
        sig: StepSignals,
        chosen: Candidate,
        draft: DraftSession,
        target: TargetSession,
        context: str,
        cfg: SpecGuardConfig,
        settings: DecodeSettings,
        times: PhaseTimes,
    ) -> tuple[StepSignals, Verdict]:
        """The judge's verdict on the chosen step; a judge that reads the target first has the
        target verify the step where it needs to (its catch-up prefill, timed as the target's)."""
        if needs_target(judge, sig, cfg):
            with times.timed("target"), self._away(target):
                sig = _verified(sig, chosen, draft, target, settings.deadline)
        with times.timed("decide"):
            return sig, judge.judge(sig, context, chosen.text, cfg)

    # 5. commit or fall back
    def _commit_or_fall_back(
        self,
        verdict: Verdict,
        chosen: Candidate,
        draft: DraftSession,
        target: TargetSession,
        settings: DecodeSettings,
        cfg: SpecGuardConfig,
        gen_t: torch.Generator,
        times: PhaseTimes,
        *,
        verified: bool = False,
    ) -> tuple[Candidate, StepSource]:
        """Keep the draft step, or discard it and have the target write the step from ctx.
        A step the target `verified` is already in its state: kept or dropped there."""
        shared = draft.shares_vocab_with(target)
        if verdict.accept:
            with times.timed("commit"):
                draft.accept()
                if verified:
                    target.accept()
                else:
                    target.append(chosen.text, chosen.ids if shared else None)
            return chosen, "draft"
        with times.timed("commit"):
            draft.reject()
            if verified:
                target.reject()
        fallback = settings.for_target(cfg, shared)
        assist = draft.assist() if fallback.target_speculation else None
        with times.timed("target"), self._away(target):
            step = target.write_step(fallback, gen_t, assist)
        if step.finish not in ENDS_GENERATION:
            with times.timed("commit"):
                draft.append(step.text, step.ids if shared else None)
        return step, "target"

    def _away(
        self, session: DraftSession | TargetSession
    ) -> contextlib.AbstractContextManager[None]:
        """A remote session's call waits on its server, not on a batcher: the generation does
        not hold other generations' grouped calls back meanwhile."""
        return contextlib.nullcontext() if session.local else self.runtime.paused()


def _generators(
    seed: int | None, draft_device: Any, target_device: Any
) -> tuple[torch.Generator, torch.Generator]:
    """Per-generation sampling generators (the target's seeded one above the draft's)."""
    import torch

    seed = seed if seed is not None else int(torch.seed() % (2**31))
    return (
        torch.Generator(device=draft_device).manual_seed(seed),
        torch.Generator(device=target_device).manual_seed((seed + 1) % 2**64),
    )


def _verified(
    sig: StepSignals,
    chosen: Candidate,
    draft: DraftSession,
    target: TargetSession,
    deadline: float | None,
) -> StepSignals:
    """`sig` with the target's log-probabilities of the chosen step (its EOS too when the step
    ended with one: the target judges the stop as well)."""
    shared = draft.shares_vocab_with(target)
    ids = chosen.scored_ids if shared else None
    logprobs = target.verify(chosen.text, ids, deadline, eos=chosen.eos_id is not None)
    return dataclasses.replace(sig, target_logprobs=tuple(logprobs))
