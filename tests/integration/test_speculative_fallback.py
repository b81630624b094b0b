"""A greedy target step written with token-level speculation equals the plain greedy step."""

import pytest
import torch

from specguard_integrations.backends.local.sampling import sample_steps
from specguard_integrations.backends.local.speculative import speculative_step
from specguard_integrations.engine.backends import DecodeSettings
from specguard_integrations.segmentation import make_segmenter
from specguard_integrations.testing import tiny_lm

PROMPT = "abc def. ghi\n"


def _settings(max_tokens, segmenter, stop, speculation=0):
    return DecodeSettings(1, 0.0, 1.0, max_tokens, segmenter, stop, "", speculation)


def _plain(lm, prompt_ids, max_tokens, segmenter, stop):
    state = lm.new_state(prompt_ids)
    lm.feed(state)
    return sample_steps(lm, state, _settings(max_tokens, segmenter, stop))[0]


@pytest.mark.parametrize("same_model", [True, False])
@pytest.mark.parametrize(
    ("segmenter", "max_tokens", "stop"),
    [("newline", 40, ()), ("blank_line", 7, ()), ("newline", 40, ("e",)), ("react", 25, ())],
)
@pytest.mark.parametrize(
    ("speculation", "first"),
    [
        (1, "none"),
        (3, "none"),
        (8, "none"),
        (3, "exact"),
        (3, "wrong_middle"),
        (8, "wrong_middle"),
        (1, "wrong_start"),
        (8, "long"),
    ],
)
def test_same_tokens_as_plain_greedy(same_model, speculation, segmenter, max_tokens, stop, first):
    target = tiny_lm(seed=0, layers=3, hidden=32)
    draft = target if same_model else tiny_lm(seed=5)
    seg = make_segmenter(segmenter, ("Answer:",))
    ids = target.encode_prompt(PROMPT)
    plain = _plain(target, ids, max_tokens, seg, stop)
    # a rejected draft step proposed first: any tokens at all must leave the output unchanged
    gold = plain.scored_ids
    other = (gold[len(gold) // 2] + 1) % target.model.config.vocab_size
    proposal = {
        "none": None,
        "exact": gold,
        "wrong_middle": [*gold[: len(gold) // 2], other, *gold[len(gold) // 2 + 1 :]],
        "wrong_start": [(gold[0] + 1) % target.model.config.vocab_size, *gold[1:]],
        "long": gold + [7] * (2 * max_tokens),
    }[first]

    tstate = target.new_state(ids[:-3])
    target.feed(tstate)
    tstate.ids.extend(ids[-3:])  # accepted text the target has not read yet
    dstate = draft.new_state(ids)
    draft.feed(dstate)
    d_len, d_logits = dstate.cache.get_seq_length(), dstate.next_logits.clone()
    settings = _settings(max_tokens, seg, stop, speculation)
    spec = speculative_step(target, tstate, draft, dstate, settings, first=proposal)
    assert (spec.ids, spec.text, spec.finish, spec.eos_id) == (
        plain.ids,
        plain.text,
        plain.finish,
        plain.eos_id,
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


def test_rejected_step_is_offered_to_the_fallback_once():
    """The draft session keeps the step it just rejected (what the target's fallback proposes
    first) until the context moves on."""
    from specguard_integrations import SpecGuardConfig
    from specguard_integrations.backends.local.sessions import LocalDraft
    from specguard_integrations.engine.backends import DecodeSettings, SignalSettings

    draft = LocalDraft(tiny_lm(seed=3))
    cfg = SpecGuardConfig.greedy(max_step_tokens=8, segmenter="newline")
    session = draft.start(PROMPT, SignalSettings.from_config(cfg))
    settings = DecodeSettings(
        k=1, temperature=0.0, top_p=1.0, max_tokens=8, segmenter=make_segmenter("newline", ())
    )
    cand = session.propose(settings, None)[0]
    session.score(cand)
    session.reject()
    assert session.rejected == cand.scored_ids and session.rejected
    assert session.assist().rejected == session.rejected
    session.append("x", None)  # the target's step is committed: the proposal is stale
    assert session.rejected == [] and session.assist().rejected == []
    cand = session.propose(settings, None)[0]
    session.score(cand)
    session.accept()
    assert session.rejected == []
