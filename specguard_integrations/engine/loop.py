"""The SpecGuard step loop: propose -> select -> score -> decide -> commit or fall back.

Per step i, with ctx = prompt + accepted steps:

1. propose  k candidate steps from the draft, each up to a step boundary;
2. select   j* = argmax_j sum_{l != j} exp(S[j, l]) over candidate embeddings;
3. score    l = min_t log p_draft(s_t),  g = min_t sum_{j in ctx} R[t, j];
4. decide   r = beta * l~ + (1 - beta) * g~, accept iff r >= tau;
5. commit   the draft step, or discard it and let the target write the step from ctx.

Generation stops at EOS, a final-answer line, a tool call, a stop sequence, `max_steps` or
`max_new_tokens`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from ..config import SpecGuardConfig
from ..segmentation import make_segmenter
from ..types import FinishReason, GenerationResult, PhaseTimes, StepFinish, StepRecord
from .backends import (
    DecodeSettings,
    DraftModel,
    DraftSession,
    LocalDraft,
    LocalTarget,
    StepSignals,
    StepVerifier,
    TargetModel,
    TargetSession,
)
from .lm import LocalCausalLM
from .policy import Verdict, decide
from .proposer import Candidate
from .selection import select

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_ENDS_GENERATION: dict[StepFinish, FinishReason] = {
    "eos": "eos",
    "final_answer": "final_answer",
    "tool_call": "tool_call",
    "stop": "stop",
}


class StepStream(Iterator[StepRecord]):
    """Iterator over step records as they are decided; `result` is set once it is exhausted."""

    def __init__(self, gen: Generator[StepRecord, None, GenerationResult]) -> None:
        self._gen = gen
        self.result: GenerationResult | None = None

    def __iter__(self) -> StepStream:
        return self

    def __next__(self) -> StepRecord:
        try:
            return next(self._gen)
        except StopIteration as stop:
            self.result = stop.value
            raise

    def close(self) -> None:
        self._gen.close()


class SpecGuard:
    """Step-level speculative decoding with a draft verified by its own attention and confidence.

    Args:
        draft: the small model (`LocalCausalLM` or any `DraftModel`).
        target: the large model (`LocalCausalLM` or any `TargetModel`).
        config: defaults for every call; a call may pass its own.
        verifier: replaces step 4 with an external judge (reward-guided speculative decoding,
            RSD): r = verifier.score(ctx, step), accept iff r >= tau. The draft signals are still
            read and recorded. None (default) is SpecGuard.
    """

    def __init__(
        self,
        draft: DraftModel | LocalCausalLM,
        target: TargetModel | LocalCausalLM,
        config: SpecGuardConfig | None = None,
        *,
        verifier: StepVerifier | None = None,
    ) -> None:
        self.verifier = verifier
        self.draft: DraftModel = (
            LocalDraft(draft) if isinstance(draft, LocalCausalLM) else draft  # type: ignore[assignment]
        )
        self.target: TargetModel = (
            LocalTarget(target) if isinstance(target, LocalCausalLM) else target
        )
        self.config = config or SpecGuardConfig()
        d, t = getattr(self.draft, "lm", None), getattr(self.target, "lm", None)
        self.shared_vocab = isinstance(d, LocalCausalLM) and isinstance(t, LocalCausalLM)
        if self.shared_vocab:
            assert isinstance(d, LocalCausalLM) and isinstance(t, LocalCausalLM)
            self.shared_vocab = d.same_vocab(t)
        if not self.draft.supports_grounding:
            log.warning(
                "draft %s gives no attention: SpecGuard runs confidence-only", self.draft.name
            )

    @classmethod
    def from_pretrained(
        cls,
        draft: str,
        target: str,
        config: SpecGuardConfig | None = None,
        *,
        device: str | None = "auto",
        dtype: Any = "auto",
    ) -> SpecGuard:
        """Load both models from Hugging Face ids or local directories."""
        return cls(
            LocalCausalLM.from_pretrained(draft, device=device, dtype=dtype),
            LocalCausalLM.from_pretrained(target, device=device, dtype=dtype),
            config,
        )

    # ------------------------------------------------------------------ public
    def generate(
        self,
        prompt: str,
        *,
        config: SpecGuardConfig | None = None,
        stop: list[str] | tuple[str, ...] | None = None,
        add_special_tokens: bool = True,
    ) -> GenerationResult:
        """Run the step loop to the end and return the text, the step records and totals."""
        stream = self.stream(
            prompt, config=config, stop=stop, add_special_tokens=add_special_tokens
        )
        for _ in stream:
            pass
        assert stream.result is not None
        return stream.result

    def stream(
        self,
        prompt: str,
        *,
        config: SpecGuardConfig | None = None,
        stop: list[str] | tuple[str, ...] | None = None,
        add_special_tokens: bool = True,
    ) -> StepStream:
        """Yield each step record as soon as it is decided; `.result` holds the totals after."""
        cfg = config or self.config
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("prompt is empty")
        if stop is not None and any(not s for s in stop):
            raise ValueError("stop sequences must be non-empty strings")
        return StepStream(self._run(prompt, cfg, tuple(stop or ()), add_special_tokens))

    # ------------------------------------------------------------------ loop
    def _run(
        self, prompt: str, cfg: SpecGuardConfig, stop: tuple[str, ...], special: bool
    ) -> Generator[StepRecord, None, GenerationResult]:
        t0 = time.perf_counter()
        draft = self.draft.start(prompt, cfg, add_special_tokens=special)
        target = self.target.start(prompt, add_special_tokens=special)
        gen_d, gen_t = self._generators(cfg)
        segmenter = make_segmenter(cfg.segmenter, cfg.final_answer_markers)
        records: list[StepRecord] = []
        pieces: list[str] = []
        used = 0
        finish: FinishReason = "max_steps"
        for i in range(cfg.max_steps):
            room = self._room(draft, target, used)
            max_tokens = min(cfg.max_step_tokens, cfg.max_new_tokens - used, room)
            if max_tokens <= 0:
                finish = "max_new_tokens" if used >= cfg.max_new_tokens else "context_window"
                break
            times = PhaseTimes()
            tail = "".join(pieces)[-max((len(s) for s in stop), default=1) + 1 :] if stop else ""
            settings = DecodeSettings(
                cfg.k, cfg.temperature, cfg.top_p, max_tokens, segmenter, stop, tail
            )
            # 1. propose
            t = time.perf_counter()
            candidates = draft.propose(settings, gen_d)
            times.propose = time.perf_counter() - t
            # 2. select
            t = time.perf_counter()
            j = self._select(candidates)
            chosen = candidates[j]
            times.select = time.perf_counter() - t
            # 3. score
            t = time.perf_counter()
            sig = draft.score(chosen)
            times.score = time.perf_counter() - t
            # 4. decide
            t = time.perf_counter()
            verdict = self._decide(sig, cfg)
            if self.verifier is not None:
                reward = self.verifier.score(prompt + "".join(pieces), chosen.text)
                verdict = Verdict(
                    verdict.confidence_norm, verdict.grounding_norm, reward, reward >= cfg.tau
                )
            times.decide = time.perf_counter() - t
            # 5. commit or fall back
            step, source = self._commit_or_fall_back(
                verdict, chosen, draft, target, cfg, settings, gen_t, times
            )
            ends = step.finish in _ENDS_GENERATION
            used += step.num_tokens
            if source == "target" and not ends:
                t = time.perf_counter()
                draft.append(step.text, step.ids if self.shared_vocab else None)
                times.commit += time.perf_counter() - t
            record = self._record(i, step, source, chosen, j, len(candidates), sig, verdict, cfg)
            if self.verifier is not None:
                record.signals = "reward_model"
            record.times = times
            records.append(record)
            pieces.append(step.text)
            yield record
            if ends:
                finish = _ENDS_GENERATION[step.finish]
                break
            if used >= cfg.max_new_tokens:
                finish = "max_new_tokens"
                break
        text = "".join(pieces)
        if finish == "stop":
            # a stop sequence may begin in an earlier step: cut the whole text before it
            text = (
                text[: min(i for i in (text.find(s) for s in stop) if i >= 0)]
                if any(s in text for s in stop)
                else text
            )
        return GenerationResult(
            prompt=prompt,
            text=text,
            steps=records,
            finish_reason=finish,
            # a remote target reports its count only once called; until then the draft's count
            prompt_tokens=target.prompt_tokens or draft.prompt_tokens,
            draft_prompt_tokens=draft.prompt_tokens,
            wall_time=time.perf_counter() - t0,
        )

    def _generators(self, cfg: SpecGuardConfig) -> tuple[torch.Generator, torch.Generator]:
        import torch

        seed = cfg.seed if cfg.seed is not None else int(torch.seed() % (2**31))
        d_dev = getattr(getattr(self.draft, "lm", None), "device", "cpu")
        t_dev = getattr(getattr(self.target, "lm", None), "device", "cpu")
        return (
            torch.Generator(device=d_dev).manual_seed(seed),
            torch.Generator(device=t_dev).manual_seed(seed + 1),
        )

    def _room(self, draft: DraftSession, target: TargetSession, used: int) -> int:
        """Tokens left before either model's context window is full (a margin of 1 for EOS)."""
        rooms = []
        for backend, session in ((self.draft, draft), (self.target, target)):
            lm = getattr(backend, "lm", None)
            state = getattr(session, "state", None)
            if isinstance(lm, LocalCausalLM) and state is not None:
                rooms.append(lm.context_window - len(state.ids) - 1)
        return min(rooms) if rooms else 1 << 30

    # 2. select
    @staticmethod
    def _select(candidates: list[Candidate]) -> int:
        import torch

        if len(candidates) == 1:
            return 0
        emb = [c.embedding for c in candidates]
        if any(e is None for e in emb):
            return 0
        return select(torch.stack([e for e in emb if e is not None]))

    # 4. decide
    @staticmethod
    def _decide(sig: StepSignals, cfg: SpecGuardConfig) -> Verdict:
        return decide(
            sig.confidence,
            sig.grounding if cfg.use_grounding else None,
            beta=cfg.beta,
            tau=cfg.tau,
            confidence_bounds=cfg.confidence_bounds,
            grounding_bounds=cfg.grounding_bounds,
        )

    # 5. commit or fall back
    def _commit_or_fall_back(
        self,
        verdict: Verdict,
        chosen: Candidate,
        draft: DraftSession,
        target: TargetSession,
        cfg: SpecGuardConfig,
        settings: DecodeSettings,
        gen_t: torch.Generator,
        times: PhaseTimes,
    ) -> tuple[Candidate, str]:
        t = time.perf_counter()
        if verdict.accept:
            draft.accept()
            target.append(chosen.text, chosen.ids if self.shared_vocab else None)
            times.commit = time.perf_counter() - t
            return chosen, "draft"
        draft.reject()
        times.commit = time.perf_counter() - t
        t = time.perf_counter()
        greedy = cfg.target_mode == "greedy"
        target_settings = DecodeSettings(
            k=cfg.effective_target_k,
            temperature=0.0 if greedy else max(cfg.temperature, 1e-5),
            top_p=1.0 if greedy else cfg.top_p,
            max_tokens=settings.max_tokens,
            segmenter=settings.segmenter,
            stop=settings.stop,
            stop_tail=settings.stop_tail,
            speculate=cfg.target_speculation if greedy and self.shared_vocab else 0,
        )
        step = target.write_step(target_settings, gen_t, assistant=draft)
        times.target = time.perf_counter() - t
        return step, "target"

    @staticmethod
    def _record(
        i: int,
        step: Candidate,
        source: str,
        chosen: Candidate,
        j: int,
        k: int,
        sig: StepSignals,
        verdict: Verdict,
        cfg: SpecGuardConfig,
    ) -> StepRecord:
        return StepRecord(
            step_index=i,
            text=step.text,
            source="draft" if source == "draft" else "target",
            num_tokens=step.num_tokens,
            decision="accept" if verdict.accept else "reject",
            signals="confidence_only" if verdict.grounding_norm is None else "grounding+confidence",
            grounding=sig.grounding if verdict.grounding_norm is not None else None,
            confidence=sig.confidence,
            grounding_norm=verdict.grounding_norm,
            confidence_norm=verdict.confidence_norm,
            fused=verdict.fused,
            threshold=cfg.tau,
            beta=cfg.beta,
            draft_text=chosen.text,
            draft_tokens=chosen.num_tokens,
            num_candidates=k,
            selected_candidate=j,
            finish=step.finish,
        )
