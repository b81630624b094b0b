"""What a generation has committed so far, and the iterator its records stream through."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

from ..types import StepRecord

if TYPE_CHECKING:
    from ..config import SpecGuardConfig
    from ..types import FinishReason, GenerationResult, PhaseTimes, StepSource
    from .backends import StepSignals
    from .candidate import Candidate
    from .policy import Verdict


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


class Transcript:
    """The committed steps: text, token count, records, and the tail a stop may span."""

    def __init__(self, stop: tuple[str, ...]) -> None:
        self.stop = stop
        self.pieces: list[str] = []
        self.records: list[StepRecord] = []
        self.tokens = 0

    @property
    def tail(self) -> str:
        if not self.stop:
            return ""
        return "".join(self.pieces)[-max(len(s) for s in self.stop) + 1 :]

    def add(self, record: StepRecord) -> None:
        self.records.append(record)
        self.pieces.append(record.text)
        self.tokens += record.num_tokens

    def text(self, finish: FinishReason) -> str:
        text = "".join(self.pieces)
        if finish == "stop":
            # a stop sequence may begin in an earlier step: cut the whole text before it
            hits = [i for i in (text.find(s) for s in self.stop) if i >= 0]
            text = text[: min(hits)] if hits else text
        return text


def record(
    i: int,
    step: Candidate,
    source: StepSource,
    candidates: list[Candidate],
    j: int,
    sig: StepSignals,
    verdict: Verdict,
    cfg: SpecGuardConfig,
    times: PhaseTimes,
) -> StepRecord:
    """The record of step `i`: what was committed (`step`, by `source`), the selected draft
    candidate `j`, its signals and the verdict on it."""
    chosen = candidates[j]
    return StepRecord(
        step_index=i,
        text=step.text,
        source=source,
        num_tokens=step.num_tokens,
        decision="accept" if verdict.accept else "reject",
        signals=verdict.signals,
        grounding=sig.grounding if verdict.grounding_norm is not None else None,
        confidence=sig.confidence,
        grounding_norm=verdict.grounding_norm,
        confidence_norm=verdict.confidence_norm,
        target_score=verdict.target_score,
        target_norm=verdict.target_norm,
        fused=verdict.fused,
        threshold=cfg.tau,
        beta=cfg.beta,
        draft_text=chosen.text,
        draft_tokens=chosen.num_tokens,
        num_candidates=len(candidates),
        selected_candidate=j,
        finish=step.finish,
        times=times,
    )
