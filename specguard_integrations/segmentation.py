"""Step boundaries: where one reasoning step ends and the next begins.

A segmenter looks at the text of the step written so far and says where the step ends, if it
does yet. The proposer keeps whole tokens: a step is the shortest token prefix whose text reaches
the boundary, so generated text after a boundary inside the same token stays in the step, and
tokens generated past it (needed only to see a look-ahead boundary) are dropped.

Kinds of boundary:
- ``boundary``: an ordinary chain-of-thought step ended; generation goes on.
- ``final_answer``: the step holds a line starting with a final-answer marker; the step ends
  after that line and generation ends.
- ``tool_call``: the step asks for a tool (a ReAct ``Action Input:`` line, or a complete
  ``<tool_call>...</tool_call>`` block); generation ends so the caller's tool can run. The model
  never writes the ``Observation:``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

from .errors import InvalidInputError

BoundaryKind = Literal["boundary", "final_answer", "tool_call"]


@dataclass(frozen=True)
class Boundary:
    end: int  # character offset in the step text where the step ends (exclusive)
    kind: BoundaryKind


class StepSegmenter(Protocol):
    """Where a step ends. A backend that sees only text (a remote model) also asks it which stop
    strings a server may apply without ending a step early, and to put back a boundary that a
    server cut off with such a stop string."""

    def find(self, text: str) -> Boundary | None:
        """The first boundary in the text of a step written so far, or None."""
        ...

    @property
    def stop_hints(self) -> tuple[str, ...]:
        """Stop strings that end the step at its boundary (never earlier); () when the boundary
        needs look-ahead."""
        ...

    def restore(self, text: str) -> str:
        """`text` with the boundary put back when a server stopped at a stop hint and dropped it.
        Empty text means the model ended its answer: nothing is invented."""
        ...


def _first_content(text: str) -> int:
    """Offset of the first non-whitespace character: leading blank lines never end a step."""
    stripped = text.lstrip()
    return len(text) - len(stripped)


def _earliest(*found: Boundary | None) -> Boundary | None:
    hits = [b for b in found if b is not None]
    return min(hits, key=lambda b: b.end) if hits else None


@dataclass(frozen=True)
class FinalAnswer:
    """A line starting with a marker (``Final Answer:``, ``Answer:``) is the last step's end."""

    markers: tuple[str, ...] = ("Final Answer:", "Answer:")

    def find(self, text: str) -> Boundary | None:
        alts = "|".join(re.escape(m) for m in sorted(self.markers, key=len, reverse=True))
        m = re.search(rf"(?:^|\n)[ \t]*(?:{alts})[^\n]*\n", text)
        return Boundary(m.end(), "final_answer") if m else None


@dataclass(frozen=True)
class DelimiterSegmenter:
    """Chain-of-thought steps split by a delimiter: ``\\n\\n`` (default) or ``\\n``."""

    delimiter: str = "\n\n"
    final: FinalAnswer = FinalAnswer()

    def find(self, text: str) -> Boundary | None:
        start = _first_content(text)
        i = text.find(self.delimiter, start)
        step = (
            Boundary(i + len(self.delimiter), "boundary") if i >= 0 and start < len(text) else None
        )
        return _earliest(step, self.final.find(text))

    @property
    def stop_hints(self) -> tuple[str, ...]:
        return (self.delimiter,)

    def restore(self, text: str) -> str:
        if not text.strip() or text.endswith(self.delimiter):
            return text
        return text + self.delimiter


@dataclass(frozen=True)
class StepMarkerSegmenter:
    """Steps that each begin with a ``Step n:`` line; a step ends before the next marker."""

    final: FinalAnswer = FinalAnswer()

    def find(self, text: str) -> Boundary | None:
        start = _first_content(text)
        m = re.compile(r"\n(?=[ \t]*Step \d+\s*:)").search(text, start + 1)
        step = Boundary(m.end(), "boundary") if m else None
        return _earliest(step, self.final.find(text))

    @property
    def stop_hints(self) -> tuple[str, ...]:
        return ()  # the boundary is seen only once the next marker starts

    def restore(self, text: str) -> str:
        return text


@dataclass(frozen=True)
class ReActSegmenter:
    """ReAct text: ``Thought:`` / ``Action:`` / ``Action Input:`` is one step ending at the tool.

    The step ends after the ``Action Input:`` line, or before an ``Observation:`` the model
    started to write itself.
    """

    final: FinalAnswer = FinalAnswer(("Final Answer:",))

    def find(self, text: str) -> Boundary | None:
        action = re.search(r"(?:^|\n)[ \t]*Action Input:[^\n]*\n", text)
        observe = re.search(r"\n(?=Observation:)", text)
        return _earliest(
            Boundary(action.end(), "tool_call") if action else None,
            Boundary(observe.end(), "tool_call") if observe else None,
            self.final.find(text),
        )

    @property
    def stop_hints(self) -> tuple[str, ...]:
        return ("\nObservation:",)

    def restore(self, text: str) -> str:
        # the cut is before "Observation:" and keeps the newline: text ends where the step ends
        return text if not text.strip() or text.endswith("\n") else text + "\n"


@dataclass(frozen=True)
class ToolCallSegmenter:
    """Chat-template tool calls: a complete call block is one step; other text is split like
    chain of thought. A block with no close marker ends with the turn. With `per_call` (several
    calls allowed, each in its own block, as hermes writes them) a closed block ends a step but
    not the generation: the model may write another call, or end its turn."""

    open_tag: str = "<tool_call>"
    close_tag: str = "</tool_call>"
    cot: DelimiterSegmenter = DelimiterSegmenter()
    per_call: bool = False

    def _open_at(self, text: str) -> int:
        if self.open_tag:
            return text.find(self.open_tag)
        body = text.lstrip()
        return len(text) - len(body) if body.startswith(("{", "[{", "<|python_tag|>")) else -1

    def find(self, text: str) -> Boundary | None:
        i = self._open_at(text)
        head = self.cot.find(text[:i]) if i >= 0 else None
        j = text.find(self.close_tag, max(i, 0)) if self.close_tag else -1
        if j >= 0:
            # a closing tag alone ends a block whose opening was forced into the prompt
            kind: BoundaryKind = "boundary" if self.per_call else "tool_call"
            return _earliest(Boundary(j + len(self.close_tag), kind), head)
        if i >= 0:
            # inside an open block a blank line is not a boundary; only text before it counts
            return head
        return self.cot.find(text)

    @property
    def stop_hints(self) -> tuple[str, ...]:
        return (self.close_tag,) if self.close_tag else ()

    def restore(self, text: str) -> str:
        i = self._open_at(text)
        if self.close_tag and i >= 0 and self.close_tag not in text[i:]:
            return text + self.close_tag
        return text


def _tool_call_segmenter(final: FinalAnswer, fmt: str, parallel: bool) -> StepSegmenter:
    from .tools import format_by_name

    found = format_by_name(fmt)
    per_call = parallel and type(found).block_per_call
    return ToolCallSegmenter(
        found.opener, found.closer, DelimiterSegmenter("\n\n", final), per_call=per_call
    )


SEGMENTERS: dict[str, Callable[[FinalAnswer, str, bool], StepSegmenter]] = {
    "blank_line": lambda final, _, __: DelimiterSegmenter("\n\n", final),
    "newline": lambda final, _, __: DelimiterSegmenter("\n", final),
    "step_marker": lambda final, _, __: StepMarkerSegmenter(final),
    "react": lambda final, _, __: ReActSegmenter(final),
    "tool_call": _tool_call_segmenter,
}


def make_segmenter(
    name: str,
    final_answer_markers: tuple[str, ...],
    tool_call_format: str = "hermes",
    parallel_tool_calls: bool = False,
) -> StepSegmenter:
    """The segmenter a `SpecGuardConfig.segmenter` value names (``tool_call`` blocks in the
    given tool-call format, registered in `specguard_integrations.tools`; with
    `parallel_tool_calls`, a format that writes a block per call goes on after one)."""
    from .tools import format_by_name

    if name not in SEGMENTERS:
        raise InvalidInputError(
            f"segmenter: unknown value {name!r}; use one of {', '.join(SEGMENTERS)}"
        )
    format_by_name(tool_call_format)  # an unknown name raises, naming the registered ones
    return SEGMENTERS[name](
        FinalAnswer(final_answer_markers), tool_call_format, parallel_tool_calls
    )


def extract_answer(
    text: str, markers: tuple[str, ...] = ("Final Answer:", "Answer:")
) -> str | None:
    """The value on the last line that starts with a final-answer marker, stripped."""
    alts = "|".join(re.escape(m) for m in sorted(markers, key=len, reverse=True))
    found = re.findall(rf"(?:^|\n)\s*(?:{alts})\s*([^\n]*)", text)
    return found[-1].strip().rstrip(".") if found else None
