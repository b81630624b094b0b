"""A greedy target step written with token-level speculation equals the plain greedy step."""

import pytest
import torch

from specguard_integrations.engine.proposer import sample_steps, speculative_step
from specguard_integrations.segmentation import make_segmenter
from specguard_integrations.testing import tiny_lm

PROMPT = "abc def. ghi\n"


def _plain(lm, prompt_ids, **kw):
    state = lm.new_state(prompt_ids)
    lm.feed(state)
    return sample_steps(lm, state, k=1, temperature=0.0, top_p=1.0, **kw)[0]


@pytest.mark.parametrize("same_model", [True, False])
@pytest.mark.parametrize("gamma", [1, 3, 8])
@pytest.mark.parametrize(
    ("segmenter", "max_tokens", "stop"),
    [("newline", 40, ()), ("blank_line", 7, ()), ("newline", 40, ("e",)), ("react", 25, ())],
)
def test_same_tokens_as_plain_greedy(same_model, gamma, segmenter, max_tokens, stop):
    target = tiny_lm(seed=0, layers=3, hidden=32)
    draft = target if same_model else tiny_lm(seed=5)
    seg = make_segmenter(segmenter, ("Answer:",))
    ids = target.encode_prompt(PROMPT)
    plain = _plain(target, ids, max_tokens=max_tokens, segmenter=seg, stop=stop)

    tstate = target.new_state(ids[:-3])
    target.feed(tstate)
    tstate.ids.extend(ids[-3:])  # accepted text the target has not read yet
    dstate = draft.new_state(ids)
    draft.feed(dstate)
    d_len, d_logits = dstate.cache.get_seq_length(), dstate.next_logits.clone()
    spec = speculative_step(
        target,
        tstate,
        draft,
        dstate,
        gamma=gamma,
        max_tokens=max_tokens,
        segmenter=seg,
        stop=stop,
    )
    assert (spec.ids, spec.text, spec.finish, spec.eos) == (
        plain.ids,
        plain.text,
        plain.finish,
        plain.eos,
    )
    # the draft is back where it was; the target holds the step and can go on
    assert dstate.fed == len(ids) and dstate.cache.get_seq_length() == d_len
    assert torch.equal(dstate.next_logits, d_logits)
    assert tstate.ids == ids + plain.ids and tstate.pending >= 1
    assert tstate.cache.get_seq_length() == tstate.fed
    target.feed(tstate)
    fresh = target.new_state(ids + plain.ids)
    target.feed(fresh)
    assert torch.allclose(tstate.next_logits, fresh.next_logits, atol=1e-4)


def test_engine_output_is_unchanged_by_speculation():
    from specguard_integrations import SpecGuard, SpecGuardConfig

    draft, target = tiny_lm(seed=3), tiny_lm(seed=0, layers=3, hidden=32)
    engine = SpecGuard(draft, target)
    base = SpecGuardConfig.greedy(
        tau=1.5, max_step_tokens=12, max_new_tokens=60, segmenter="newline"
    )
    a = engine.generate(PROMPT, config=base)
    b = engine.generate(PROMPT, config=base.merged(target_speculation=4))
    assert a.text == b.text and [s.source for s in a.steps] == [s.source for s in b.steps]
    assert a.target_steps > 0
