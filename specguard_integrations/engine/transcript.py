"""What a generation has committed so far, and the iterator its records stream through."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING

from ..types import StepRecord

if TYPE_CHECKING:
    from ..types import FinishReason, GenerationResult


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
