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
from dataclasses import dataclass
from typing import Literal, Protocol

BoundaryKind = Literal["boundary", "final_answer", "tool_call"]


@dataclass(frozen=True)
class Boundary:
    end: int  # character offset in the step text where the step ends (exclusive)
    kind: BoundaryKind


class StepSegmenter(Protocol):
    def find(self, text: str) -> Boundary | None:
        """The first boundary in the text of a step written so far, or None."""
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


@dataclass(frozen=True)
class StepMarkerSegmenter:
    """Steps that each begin with a ``Step n:`` line; a step ends before the next marker."""

    final: FinalAnswer = FinalAnswer()

    def find(self, text: str) -> Boundary | None:
        start = _first_content(text)
        m = re.compile(r"\n(?=[ \t]*Step \d+\s*:)").search(text, start + 1)
        step = Boundary(m.end(), "boundary") if m else None
        return _earliest(step, self.final.find(text))


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


@dataclass(frozen=True)
class ToolCallSegmenter:
    """Chat-template tool calls: a complete ``<tool_call>...</tool_call>`` block is one step;
    other text is split like chain of thought."""

    open_tag: str = "<tool_call>"
    close_tag: str = "</tool_call>"
    cot: DelimiterSegmenter = DelimiterSegmenter()

    def find(self, text: str) -> Boundary | None:
        i = text.find(self.open_tag)
        j = text.find(self.close_tag, max(i, 0))
        head = self.cot.find(text[:i]) if i >= 0 else None
        if j >= 0:
            # a closing tag alone ends a block whose opening was forced into the prompt
            return _earliest(Boundary(j + len(self.close_tag), "tool_call"), head)
        if i >= 0:
            # inside an open block a blank line is not a boundary; only text before it counts
            return head
        return self.cot.find(text)


def make_segmenter(name: str, final_answer_markers: tuple[str, ...]) -> StepSegmenter:
    """The segmenter a `SpecGuardConfig.segmenter` value names."""
    final = FinalAnswer(final_answer_markers)
    if name == "blank_line":
        return DelimiterSegmenter("\n\n", final)
    if name == "newline":
        return DelimiterSegmenter("\n", final)
    if name == "step_marker":
        return StepMarkerSegmenter(final)
    if name == "react":
        return ReActSegmenter(FinalAnswer(tuple(m for m in final_answer_markers)))
    if name == "tool_call":
        return ToolCallSegmenter(cot=DelimiterSegmenter("\n\n", final))
    raise ValueError(
        f"segmenter: unknown value {name!r}; "
        "use blank_line, newline, step_marker, react or tool_call"
    )
