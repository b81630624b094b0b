"""What only a GPU shows, kept fixed on a CPU: tensors made on the device of the tensors they
meet, the rollout on rows that sit on another device, only the rollout layers computing their
attention the eager way (in float32), a long prompt that holds no `(T, V)` logits, bf16 runs that
still group and ground like float32, and clocks and memory read where the work is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.engine import signals
from specguard_integrations.testing import char_tokenizer, tiny_family_model, tiny_lm

ROOT = Path(__file__).resolve().parents[2]


def test_the_rollout_takes_its_device_from_the_rows():
    """Rows on the `meta` device (a layer on another GPU stands in): the mass vectors cached
    on the CPU and the new context indicator follow the rows, and the result is on theirs."""
    import torch

    rows = [torch.rand(3, 8, device="meta") for _ in range(3)]
    prev = [torch.ones(5, device="cpu") for _ in range(3)]
    ctx = torch.ones(3, device="cpu")
    mass = signals.propagate_mass(rows, prev, ctx)
    assert [m.device.type for m in mass[1:]] == ["meta"] * 3


def test_only_the_rollout_layers_run_eager(monkeypatch):
    """A 4-layer draft scoring with rollout_layers=1 computes one layer's probabilities; the
    others go through scaled-dot-product attention."""
    from specguard_integrations.backends.local import attention
    from specguard_integrations.backends.local.sessions import LocalDraftSession
    from specguard_integrations.engine.backends import SignalSettings

    seen: list[int] = []
    eager = attention._eager_fp32

    def spy(module, *args, **kwargs):
        seen.append(module.layer_idx)
        return eager(module, *args, **kwargs)

    monkeypatch.setattr(attention, "_eager_fp32", spy)
    lm = tiny_lm(seed=0, layers=4)
    ids = lm.encode_prompt("Question: 2 + 2?\n")
    session = LocalDraftSession(lm, ids, SignalSettings(rollout_layers=1))
    assert seen and set(seen) == {3}
    assert session.state.mass is not None and session.state.mass[-1].shape[0] == len(ids)
    seen.clear()
    session3 = LocalDraftSession(lm, ids, SignalSettings(rollout_layers=3))
    assert set(seen) == {1, 2, 3} and session3.state.mass is not None


def test_captured_probabilities_are_float32_in_a_bf16_model(device):
    import torch

    from specguard_integrations.backends.local.model import LocalCausalLM

    tiny = tiny_lm(seed=0, layers=3)
    lm = LocalCausalLM(tiny.model.to(device, torch.bfloat16), tiny.tokenizer)
    cache = lm.new_state([1, 5, 6, 7]).cache
    _, attn = lm.attend(torch.tensor([[1, 5, 6, 7]], device=device), cache, 2)
    assert [a.dtype for a in attn] == [torch.float32] * 2
    assert [a.device.type for a in attn] == [torch.device(device).type] * 2
    assert torch.allclose(attn[-1].sum(-1), torch.ones(1, device=device), atol=1e-5)


def test_a_long_prompt_adds_under_a_gigabyte():
    """4,000 prompt tokens into a tiny model with a real 151,936-token vocabulary, read as a
    draft reads a prompt (rows into rollout mass): measured in its own process. It held every
    chunk's (T, V) logits and attention before (5.1 GB here), not any more."""
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "long_prompt_memory.py"), "--tokens", "4000"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["mass_positions"] == 4000
    assert report["peak_growth_mib"] < 1024, report


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_grouping_switches_on_in_bf16(arch, device):
    import torch

    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.runtime.grouped import supports_grouping

    tok = char_tokenizer()
    model = tiny_family_model(arch, tok, seed=3, layers=3).to(device, torch.bfloat16)
    assert supports_grouping(LocalCausalLM(model, tok, name=f"{arch}-bf16"))
    fp32 = tiny_family_model(arch, tok, seed=3).to(device)
    assert supports_grouping(LocalCausalLM(fp32, tok))


def test_the_bundled_pair_groups_in_bf16():
    from specguard_integrations.registry import load_pair
    from specguard_integrations.runtime.grouped import supports_grouping

    engine = load_pair(device="cpu", dtype="bfloat16")
    models = engine.local_models()
    assert len(models) == 2
    for lm in models:
        assert str(lm.model.dtype) == "torch.bfloat16" and supports_grouping(lm), lm.name


def test_grounding_in_bf16_is_close_to_float32():
    """The same greedy run in float32 and in bf16 (a copy of the same weights): the scores
    of the steps both wrote agree within 0.05 (the captured attention is float32 in both)."""
    import copy

    import torch

    from specguard_integrations.backends.local.model import LocalCausalLM

    cfg = SpecGuardConfig.greedy(tau=0.0, max_new_tokens=24, max_step_tokens=6)
    d32, t32 = tiny_lm(seed=1), tiny_lm(seed=2)
    d16, t16 = (
        LocalCausalLM(copy.deepcopy(m.model).to(torch.bfloat16), m.tokenizer) for m in (d32, t32)
    )
    a = SpecGuard(d32, t32, cfg).generate("Question: what is 3 + 4?\n")
    b = SpecGuard(d16, t16, cfg).generate("Question: what is 3 + 4?\n")
    same = 0
    for x, y in zip(a.steps, b.steps, strict=False):
        if x.text != y.text:
            break
        same += 1
        assert abs(x.grounding - y.grounding) < 0.05, (x.grounding, y.grounding)
        assert abs(x.confidence - y.confidence) < 0.25, (x.confidence, y.confidence)
    assert same >= 1


def test_phase_clocks_wait_for_the_devices(monkeypatch):
    """`PhaseTimes.timed` reads the clock after every CUDA device finished its queued work."""
    import torch

    from specguard_integrations.types import PhaseTimes

    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(d))
    times = PhaseTimes()
    with times.timed("propose"):
        pass
    assert calls == [0, 1, 0, 1]  # before the block and after it, on both devices


def test_peak_memory_is_read_on_every_device(monkeypatch):
    import torch

    from specguard_integrations.bench.runner import peak_memory

    reset: list[int] = []
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", lambda d: reset.append(d))
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d: (d + 1) * 2**20)
    with peak_memory("cuda") as peak:
        pass
    assert reset == [0, 1] and peak[0] == 3.0  # 1 MiB on cuda:0 plus 2 MiB on cuda:1


@pytest.mark.parametrize(
    ("device", "dtype", "match"),
    [
        ("gpu", "auto", "not a torch device"),
        ("cuda:7", "auto", "CUDA device"),
        ("cpu", "cuda", "not a torch dtype"),
        ("cpu", "float64x", "not a torch dtype"),
        ("cpu", 3, "not a torch dtype"),
    ],
)
def test_bad_device_or_dtype_named_before_loading(device, dtype, match):
    """A device or dtype torch cannot use is an `InvalidInputError` naming it, not a torch
    error from deep inside a load."""
    from specguard_integrations.backends.local.loading import resolve_device, resolve_dtype
    from specguard_integrations.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=match):
        resolve_dtype(dtype, resolve_device(device))


def test_dtype_names_resolve():
    import torch

    from specguard_integrations.backends.local.loading import resolve_dtype

    assert resolve_dtype("torch.bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") is torch.float16
    assert resolve_dtype("auto", "cpu") is torch.float32


@pytest.mark.parametrize(
    ("k", "tau", "constrained", "speculation"),
    [
        (1, 0.0, False, 0),
        (4, 0.0, False, 0),
        (4, 1.01, False, 4),
        (1, 1.01, False, 4),
        (3, 0.0, True, 0),
        (3, 1.01, True, 0),
    ],
)
def test_one_host_read_per_forward(monkeypatch, device, k, tau, constrained, speculation):
    """Every read of a tensor's value on the host (`item`, `tolist`, `int`, `float`, `bool`)
    waits for the device on CUDA. A generation reads at most once per model forward (the token
    the next forward needs, for all k rows at once) plus three per step (its scores and the
    selected candidate), whatever k, the fallback's speculation or the grammar. (Reads inside
    transformers count too; on CUDA `torch.cuda.set_sync_debug_mode` shows the rest.)"""
    import torch

    from specguard_integrations.backends.local.model import LocalCausalLM

    draft, target = (
        LocalCausalLM(m.model.to(device), m.tokenizer, name=m.name)
        for m in (tiny_lm(seed=1), tiny_lm(seed=2))
    )
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    cfg = SpecGuardConfig(
        k=k,
        temperature=0.8 if k > 1 else 0.0,
        tau=tau,
        max_new_tokens=40,
        max_step_tokens=8,
        seed=1,
        target_speculation=speculation,
        constraint={"json_schema": schema} if constrained else None,
    )
    engine = SpecGuard(draft, target, cfg)
    engine.generate("Question: what is 3 + 4?\n")  # once-per-model checks (grouping) done
    reads: list[str] = []
    for name in ("item", "tolist", "__int__", "__float__", "__bool__", "__index__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    forwards: list[int] = []
    hooks = [
        lm.model.register_forward_hook(lambda *_: forwards.append(1)) for lm in (draft, target)
    ]
    try:
        result = engine.generate("Question: what is 3 + 4?\n")
    finally:
        for hook in hooks:
            hook.remove()
    assert result.steps and forwards
    assert len(reads) <= len(forwards) + 3 * len(result.steps), (len(forwards), reads)
    assert not {"item", "__bool__", "__index__"} & set(reads), reads
