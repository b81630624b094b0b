import pytest

from specguard_integrations import SpecGuardConfig
from specguard_integrations.errors import ConfigError
from specguard_integrations.segmentation import make_segmenter

MARKERS = ("Final Answer:", "Answer:")


def test_blank_line_boundary_and_leading_blank_lines():
    seg = make_segmenter("blank_line", MARKERS)
    assert seg.find("We add 2 and 3") is None
    b = seg.find("We add 2 and 3.\n\nThen")
    assert b is not None and b.end == len("We add 2 and 3.\n\n") and b.kind == "boundary"
    assert seg.find("\n\n") is None  # blank lines before any content do not end a step


def test_final_answer_line_ends_generation_after_its_line():
    seg = make_segmenter("blank_line", MARKERS)
    assert seg.find("So x = 4.\nAnswer: 4") is None  # the line is not finished yet
    b = seg.find("So x = 4.\nAnswer: 4\nmore")
    assert b is not None and b.kind == "final_answer" and b.end == len("So x = 4.\nAnswer: 4\n")
    b = seg.find("Final Answer: 12\n")
    assert b is not None and b.kind == "final_answer"
    assert seg.find("The Answer: is not at line start\n") is None


def test_newline_and_step_marker_segmenters():
    assert make_segmenter("newline", MARKERS).find("a\nb").end == 2
    seg = make_segmenter("step_marker", MARKERS)
    assert seg.find("Step 1: add\nmore text\n") is None
    b = seg.find("Step 1: add\nmore\nStep 2:")
    assert b is not None and b.end == len("Step 1: add\nmore\n")


def test_react_step_ends_at_the_tool():
    seg = make_segmenter("react", MARKERS)
    text = 'Thought: I need the sum\nAction: calculator\nAction Input: {"a": 2}\nObservation'
    b = seg.find(text)
    assert b is not None and b.kind == "tool_call"
    assert text[: b.end].endswith('Action Input: {"a": 2}\n')
    b = seg.find("Thought: done\nFinal Answer: 4\n")
    assert b is not None and b.kind == "final_answer"


def test_tool_call_block_is_one_step():
    seg = make_segmenter("tool_call", MARKERS)
    assert seg.find('<tool_call>\n{"name": "add",\n\n') is None  # blank line inside a block
    text = '<tool_call>\n{"name": "add", "arguments": {}}\n</tool_call>'
    b = seg.find(text)
    assert b is not None and b.kind == "tool_call" and b.end == len(text)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("k", 0),
        ("temperature", -0.1),
        ("top_p", 0.0),
        ("beta", 1.5),
        ("tau", -1.0),
        ("attention_cut", 1.0),
        ("rollout_layers", 0),
        ("max_step_tokens", 0),
        ("segmenter", "sentences"),
        ("unknown_field", 1),
    ],
)
def test_invalid_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        SpecGuardConfig(**{field: value})


def test_inverted_bounds_and_greedy_with_many_candidates_are_rejected():
    with pytest.raises(ConfigError, match="confidence_bounds"):
        SpecGuardConfig(confidence_bounds=(0.0, -6.0))
    with pytest.raises(ConfigError, match="temperature=0"):
        SpecGuardConfig(k=4, temperature=0.0)


def test_config_is_frozen_and_round_trips(tmp_path):
    cfg = SpecGuardConfig(tau=0.5, beta=0.4)
    import pydantic

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        cfg.tau = 0.9
    path = tmp_path / "cfg.json"
    cfg.to_file(path, note="x")
    assert SpecGuardConfig.from_file(path) == cfg
    assert cfg.merged(tau=0.9, k=None).tau == 0.9
    assert SpecGuardConfig.greedy().k == 1
