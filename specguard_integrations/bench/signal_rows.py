"""The signal study's records: a recorded draft step with its signal values (`StepRow`), and a
selection-accuracy row (`Selection`). The study (`signal_study.py`) writes them and the report
(`signal_report.py`) reads them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class StepRow:
    """One recorded draft step."""

    family: str
    item: int  # index of its item
    index: int  # step index in its generation
    ctx_ids: list[int]  # prompt + committed steps, draft tokens
    prompt_len: int
    step_ids: list[int]
    text: str
    label: bool
    split: str = "test"
    values: dict[str, float] = field(default_factory=dict)
    # the target's ids of prompt + committed steps, and of the step (a local target), for the
    # target's own score of the step (``t_min``, ``t_mean``)
    target_ctx: list[int] | None = None
    target_step: list[int] | None = None


@dataclass
class Selection:
    family: str
    k: int
    contexts: int
    chosen_hidden: float  # share of contexts whose hidden-medoid pick is correct
    chosen_attention: float
    random: float  # mean correctness of a candidate
    best: float  # share of contexts with at least one correct candidate
