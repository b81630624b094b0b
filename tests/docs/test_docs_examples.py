"""The docs tier: every fenced ```python block of README.md and docs/*.md runs as written.

Blocks of one page run in order in one namespace, as a reader types them into one Python
session: a later block may use what an earlier one defined (each page is one module, with a
working directory of its own, so files a block writes stay out of the repository). A block's
test runs the blocks above it first when they have not run yet, so one block can be picked
with ``-k``.

Hub model ids are the one thing swapped: a string that names a model (a positional argument of
a `MODEL_CALLS` function, or a `MODEL_KEYWORDS` argument) and looks like ``org/name`` is
replaced by the bundled offline pair's draft or target directory (`HUB_IDS`,
`registry.resolve(None, role)`); one not in the map fails, naming it. No download is possible.

A block that cannot run here (a remote engine: vLLM, a running `specguard serve`, an OpenAI
endpoint; a GPU; files outside the repository) says so with a marker on the line right above
its fence, and is reported as skipped with that reason (``pytest -rs``):

    <!-- docs-tier: skip (needs a running vLLM server) -->

A marker without a reason, or one that is not right above a ```python fence, fails. A block
that raises fails naming its page and the line of its fence.
"""

from __future__ import annotations

import ast
import re
import sys
import textwrap
import types
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# every hub id the docs name, and the bundled model that stands in for it
HUB_IDS = {
    "Qwen/Qwen2.5-Math-1.5B-Instruct": "draft",
    "Qwen/Qwen2.5-1.5B-Instruct": "draft",
    "Qwen/Qwen2.5-0.5B-Instruct": "draft",
    "Qwen/Qwen2.5-Math-7B-Instruct": "target",
    "Qwen/Qwen2.5-7B-Instruct": "target",
    "Qwen/Qwen2.5-72B-Instruct": "target",
}
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# where a string names a model: these functions' positional arguments, these keywords
MODEL_CALLS = {"from_pretrained", "load_lm", "load_pair", "build_pair"}
MODEL_KEYWORDS = {"draft", "target", "model", "model_name", "model_id"}

MARKER = re.compile(r"<!--\s*docs-tier:(.*?)-->")
SKIP = re.compile(r"\s*skip\s*(?:\((.*)\))?\s*")
MARKER_FORM = "<!-- docs-tier: skip (the reason) -->"
MISPLACED_ABOVE = "a docs-tier marker goes on the line right above a ```python fence, not above"


@dataclass(frozen=True)
class Block:
    """One fenced python block: its page (relative to the repository), the line of its opening
    fence, its code, and its marker's skip reason or the marker's fault."""

    page: str
    line: int
    code: str
    skip: str | None = None
    marker_error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def _marker(body: str) -> tuple[str | None, str | None]:
    """(skip reason, fault) of a marker's text after ``docs-tier:``."""
    found = SKIP.fullmatch(body)
    if found is None:
        return None, f"a docs-tier marker reads {MARKER_FORM}, not <!-- docs-tier:{body}-->"
    if not (found.group(1) or "").strip():
        return None, f"a docs-tier marker needs its reason: {MARKER_FORM}"
    return found.group(1).strip(), None


def parse_page(text: str, page: str) -> tuple[list[Block], list[str]]:
    """The page's python blocks, and its misplaced markers (each named by page and line)."""
    blocks: list[Block] = []
    misplaced: list[str] = []
    lines = text.splitlines()
    pending: tuple[int, str | None, str | None] | None = None  # a marker above the next line
    n = 0
    while n < len(lines):
        line, n = lines[n], n + 1
        fence = line.lstrip()
        if fence.startswith("```"):
            lang = fence[3:].strip()
            body, n = _fence_body(lines, n)
            if lang == "python":
                skip, fault = (None, None) if pending is None else pending[1:]
                code = textwrap.dedent("\n".join(body)) + "\n"
                blocks.append(Block(page, n - len(body) - 1, code, skip, fault))
            elif pending is not None:
                misplaced.append(f"{page}:{pending[0]}: {MISPLACED_ABOVE} a non-python fence")
            pending = None
            continue
        if pending is not None:
            misplaced.append(f"{page}:{pending[0]}: {MISPLACED_ABOVE} text or a blank line")
            pending = None
        found = MARKER.search(line)
        if found:
            pending = (n, *_marker(found.group(1)))
    if pending is not None:
        misplaced.append(f"{page}:{pending[0]}: {MISPLACED_ABOVE} the end of the page")
    return blocks, misplaced


def _fence_body(lines: list[str], n: int) -> tuple[list[str], int]:
    """The lines of a fence opened above line index `n`, and the index after its close."""
    body = []
    while n < len(lines) and not lines[n].lstrip().startswith("```"):
        body.append(lines[n])
        n += 1
    return body, n + 1


class UnknownHubId(AssertionError):
    """A hub id with no offline stand-in (its message names the page and line)."""


class _HubIds(ast.NodeTransformer):
    """Replaces each hub id in a model position by its bundled stand-in's directory."""

    def __init__(self, where: str) -> None:
        self.where = where

    def visit_Call(self, node: ast.Call) -> ast.Call:
        self.generic_visit(node)
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in MODEL_CALLS:
            node.args = [self._swap(a) for a in node.args]
        for k in node.keywords:
            if k.arg in MODEL_KEYWORDS:
                k.value = self._swap(k.value)
        return node

    def _swap(self, node: ast.expr) -> ast.expr:
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            return node
        if not HUB_ID.fullmatch(node.value):
            return node  # a local path, an alias or a served model's name: as written
        role = HUB_IDS.get(node.value)
        if role is None:
            raise UnknownHubId(
                f"{self.where}: hub id {node.value!r} has no offline stand-in; add it to HUB_IDS"
                f" in {Path(__file__).relative_to(ROOT)} as a draft or a target"
            )
        from specguard_integrations.registry import resolve

        return ast.copy_location(ast.Constant(resolve(None, role)), node)


def compile_block(block: Block) -> types.CodeType:
    """The block's code with hub ids swapped, its line numbers those of the page."""
    tree = ast.parse(block.code, filename=block.page)
    tree = ast.fix_missing_locations(_HubIds(block.where).visit(tree))
    ast.increment_lineno(tree, block.line)
    return compile(tree, str(ROOT / block.page), "exec")


class Session:
    """A reader's Python session over one page: its blocks run in order in one module."""

    def __init__(self, blocks: list[Block], workdir: Path) -> None:
        self.blocks = blocks
        self.workdir = workdir
        slug = re.sub(r"\W", "_", blocks[0].page)
        self.module = types.ModuleType(f"docs_tier_{slug}")
        sys.modules[self.module.__name__] = self.module  # annotations resolve through it
        self.ran = 0  # blocks[:ran] have run or been skipped
        self.failed: str | None = None

    def run_through(self, block: Block) -> None:
        """Run every block of the page up to `block` that has not run yet."""
        upto = self.blocks.index(block)
        while self.ran <= upto:
            b = self.blocks[self.ran]
            if self.failed is not None:
                pytest.skip(f"{block.where}: an earlier block of the page failed ({self.failed})")
            self.ran += 1
            if b.skip is None and b.marker_error is None:
                self._run(b)

    def _run(self, block: Block) -> None:
        try:
            exec(compile_block(block), self.module.__dict__)
        except UnknownHubId:
            self.failed = block.where
            raise
        except Exception as err:
            self.failed = block.where
            raise AssertionError(f"{block.where}: {type(err).__name__}: {err}") from err


def _collect() -> tuple[list[Block], list[str]]:
    blocks: list[Block] = []
    misplaced: list[str] = []
    for path in PAGES:
        found, wrong = parse_page(path.read_text(), str(path.relative_to(ROOT)))
        blocks += found
        misplaced += wrong
    return blocks, misplaced


BLOCKS, MISPLACED = _collect()


def _framework_state() -> tuple:
    """LlamaIndex's process-wide state that examples change (handlers, `Settings.llm`)."""
    from llama_index.core import Settings
    from llama_index.core.instrumentation import get_dispatcher

    root = get_dispatcher()
    return root, list(root.event_handlers), list(root.span_handlers), Settings._llm


def _restore(state: tuple) -> None:
    from llama_index.core import Settings

    root, events, spans, llm = state
    root.event_handlers[:] = events
    root.span_handlers[:] = spans
    Settings._llm = llm


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    """One `Session` per page, made on first use; process-wide framework state put back after
    the tier, so handlers the examples register never reach other tests."""
    state = _framework_state()
    made: dict[str, Session] = {}

    def session(page: str) -> Session:
        if page not in made:
            workdir = tmp_path_factory.mktemp(re.sub(r"\W", "_", page))
            made[page] = Session([b for b in BLOCKS if b.page == page], workdir)
        return made[page]

    yield session
    _restore(state)
    for s in made.values():
        sys.modules.pop(s.module.__name__, None)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.where for b in BLOCKS])
def test_block_runs_as_written(block: Block, sessions, monkeypatch):
    if block.marker_error is not None:
        pytest.fail(f"{block.where}: {block.marker_error}")
    if block.skip is not None:
        pytest.skip(f"{block.where}: {block.skip}")
    session = sessions(block.page)
    monkeypatch.chdir(session.workdir)
    session.run_through(block)


def test_every_marker_sits_right_above_a_python_fence():
    assert MISPLACED == []


def test_the_pages_have_python_blocks():
    pages = {b.page for b in BLOCKS}
    assert {"README.md", "docs/langchain.md", "docs/llama_index.md"} <= pages


# ---------------------------------------------------------------- the tier's own reading


def test_a_marker_skips_the_block_below_with_its_reason():
    text = "x\n<!-- docs-tier: skip (needs a server) -->\n```python\nboom()\n```\n"
    (block,), misplaced = parse_page(text, "p.md")
    assert (block.line, block.code, block.skip, block.marker_error) == (
        3,
        "boom()\n",
        "needs a server",
        None,
    )
    assert misplaced == []


@pytest.mark.parametrize("marker", ["<!-- docs-tier: skip -->", "<!-- docs-tier: skip ( ) -->"])
def test_a_marker_without_a_reason_is_a_fault(marker):
    (block,), _ = parse_page(f"{marker}\n```python\npass\n```\n", "p.md")
    assert block.skip is None and "needs its reason" in block.marker_error


def test_a_marker_away_from_a_python_fence_is_named():
    text = (
        "<!-- docs-tier: skip (a) -->\n\n```python\npass\n```\n"
        "<!-- docs-tier: skip (b) -->\n```bash\nls\n```\n"
    )
    blocks, misplaced = parse_page(text, "p.md")
    assert [b.skip for b in blocks] == [None]
    assert misplaced == [
        f"p.md:1: {MISPLACED_ABOVE} text or a blank line",
        f"p.md:6: {MISPLACED_ABOVE} a non-python fence",
    ]


def test_hub_ids_in_model_positions_become_the_bundled_pair():
    from specguard_integrations.registry import resolve

    code = (
        'f = from_pretrained("Qwen/Qwen2.5-Math-1.5B-Instruct", "Qwen/Qwen2.5-7B-Instruct")\n'
        'g = Chat(target="Qwen/Qwen2.5-72B-Instruct", path="runs/trace.jsonl")\n'
    )
    seen = {}
    calls = {"from_pretrained": lambda *a: a, "Chat": lambda **k: k}
    exec(compile_block(Block("p.md", 10, code)), {**calls, "__builtins__": __builtins__}, seen)
    assert seen["f"] == (resolve(None, "draft"), resolve(None, "target"))
    assert seen["g"] == {"target": resolve(None, "target"), "path": "runs/trace.jsonl"}


def test_an_unknown_hub_id_fails_naming_it():
    block = Block("p.md", 4, 'm = load_lm("acme/Unknown-7B")\n')
    with pytest.raises(UnknownHubId, match=r"^p\.md:4: hub id 'acme/Unknown-7B' has no"):
        compile_block(block)


def test_a_failing_block_names_its_page_and_line(tmp_path):
    blocks = [Block("p.md", 2, "x = 1\n"), Block("p.md", 9, "\n\ny = x + undefined\n")]
    session = Session(blocks, tmp_path)
    with pytest.raises(AssertionError, match=r"^p\.md:9: NameError") as err:
        session.run_through(blocks[1])
    assert err.value.__cause__.__traceback__.tb_next.tb_lineno == 12  # fence 9 + line 3
    sys.modules.pop(session.module.__name__)
