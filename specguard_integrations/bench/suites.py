"""Task suites for the benchmark: the bundled families, a GSM8K-format JSONL file, or any JSONL
file with question/answer fields and an answer extractor.

    bundled                       every bundled family (held-out split)
    bundled:arithmetic,tools      some of them
    gsm8k:PATH                    {"question": ..., "answer": "... #### 42"} per line
    jsonl:PATH                    {"question": ..., "answer": ...}; `extractor` picks the answer
    words                         generated arithmetic word problems, free-form steps checked
                                  equation by equation (`tasks.freeform`); offset is the seed

External items have no step checker: they count for accuracy, not for signal AUROC.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import InvalidInputError, MissingAssetError
from ..tasks.base import FAMILIES, Item, StepVerdict, extract_answer, make_split

EXTRACTORS = ("answer_line", "last_number")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def _number(text: str) -> float | None:
    found = _NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def extract(text: str, extractor: str) -> str | None:
    """The predicted answer in a completion: ``answer_line`` (the last ``Answer:`` line, else the
    last number), ``last_number``, or ``re:PATTERN`` (group 1 of the last match)."""
    if extractor.startswith("re:"):
        found = re.findall(extractor[3:], text)
        return str(found[-1]) if found else None
    if extractor == "answer_line":
        line = extract_answer(text)
        if line is not None:
            return line
    if extractor in EXTRACTORS:
        n = _number(text)
        return None if n is None else f"{n:g}"
    raise InvalidInputError(
        f"extractor: use {', '.join(EXTRACTORS)} or re:PATTERN, got {extractor!r}"
    )


def same_answer(predicted: str | None, gold: str) -> bool:
    """Numbers compare by value (``1,000`` == ``1000.0``); other answers as stripped text."""
    if predicted is None:
        return False
    p, g = _number(predicted), _number(gold)
    if p is not None and g is not None and _NUMBER.fullmatch(gold.strip().replace(" ", "")):
        return math_close(p, g)
    return predicted.strip().rstrip(".").lower() == gold.strip().rstrip(".").lower()


def math_close(a: float, b: float) -> bool:
    return abs(a - b) <= 1e-6 * max(1.0, abs(b))


@dataclass
class ExternalItem(Item):
    """A question/answer pair from a file: the answer is checked, steps are not."""

    extractor: str = "answer_line"

    @property
    def segmenter(self) -> str:
        return "blank_line"

    @property
    def has_step_labels(self) -> bool:
        return False

    def check_step(self, i: int, text: str) -> StepVerdict:
        raise InvalidInputError(f"{self.family} items have no step checker")

    def correct(self, completion: str) -> bool:
        return same_answer(extract(completion, self.extractor), self.answer)


def load_suite(
    spec: str,
    *,
    limit: int = 15,
    offset: int = 0,
    prompt_template: str = "Question: {question}\n",
    question_field: str = "question",
    answer_field: str = "answer",
    extractor: str = "answer_line",
) -> list[Item]:
    """Items of a suite (see the module doc); `limit` per bundled family, or in total for files,
    after skipping `offset` (calibration uses a later slice of the held-out split as dev set)."""
    if limit < 1 or offset < 0:
        raise InvalidInputError("limit must be >= 1 and offset >= 0")
    kind, _, arg = spec.partition(":")
    if kind == "bundled":
        fams = [f for f in arg.split(",") if f] or list(FAMILIES)
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            raise InvalidInputError(f"unknown bundled families {bad}; choose from {list(FAMILIES)}")
        return [it for f in fams for it in make_split(f, "test", offset + limit)[offset:]]
    if kind == "words" and not arg:
        from ..tasks.freeform import word_problems

        return list(word_problems(limit, seed=offset))
    if kind not in ("gsm8k", "jsonl") or not arg:
        raise InvalidInputError(
            f"suite: use bundled[:families], words, gsm8k:PATH or jsonl:PATH, got {spec!r}"
        )
    if "{question}" not in prompt_template:
        raise InvalidInputError("prompt_template must contain {question}")
    extract("", extractor)  # validate the extractor name now
    path = Path(arg)
    if not path.is_file():
        raise MissingAssetError(f"suite file {path} does not exist")
    items = _read_items(
        kind, path, limit, offset, prompt_template, question_field, answer_field, extractor
    )
    if not items:
        raise InvalidInputError(f"{path} holds no items")
    return items


def _read_items(
    kind: str,
    path: Path,
    limit: int,
    offset: int,
    prompt_template: str,
    question_field: str,
    answer_field: str,
    extractor: str,
) -> list[Item]:
    """Up to `limit` items of a gsm8k/jsonl file after `offset` non-blank lines."""
    items: list[Item] = []
    skipped = 0
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if skipped < offset:
                skipped += 1
                continue
            try:
                row = json.loads(line)
                q, a = str(row[question_field]), str(row[answer_field])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InvalidInputError(
                    f"{path}:{n}: needs {question_field!r} and {answer_field!r}: {err}"
                ) from err
            if kind == "gsm8k":
                if "####" not in a:
                    raise InvalidInputError(f"{path}:{n}: a GSM8K answer ends with '#### N'")
                a = a.rsplit("####", 1)[1].strip().replace(",", "")
            items.append(
                ExternalItem(
                    family=kind,
                    prompt=prompt_template.format(question=q),
                    steps=[],
                    answer=a,
                    extractor=extractor,
                )
            )
            if len(items) >= limit:
                break
    return items


def read_prompts(path: str | Path) -> list[str]:
    """Prompts from a file: JSONL (a string, or an object with a ``prompt`` field, per line) or
    plain text (one prompt per line, ``\\n`` written as an escape)."""
    src = Path(path)
    lines = src.read_text(encoding="utf-8").splitlines()
    prompts = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        if src.suffix in (".jsonl", ".json"):
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                raise InvalidInputError(f"{src}:{n}: not a JSON line: {err}") from None
            text = obj.get("prompt") if isinstance(obj, dict) else obj
            if not isinstance(text, str):
                raise InvalidInputError(
                    f"{src}:{n}: a string or an object with a prompt string expected"
                )
        else:
            text = line.replace("\\n", "\n")
        prompts.append(text)
    if not prompts:
        raise InvalidInputError(f"{src}: no prompts")
    return prompts
