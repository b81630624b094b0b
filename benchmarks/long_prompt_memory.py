"""Peak memory a long prompt adds when a draft reads it (one process per measurement).

A tiny random Llama with a real 151,936-token vocabulary (Qwen's) reads a 4,000-token prompt
the way a SpecGuard draft session does (prompt fed with the rollout layers' attention, rollout
mass kept per position); the peak resident memory it adds over the loaded model is printed in
MiB. What it measures is the feed's bookkeeping (logits, attention rows, hidden states), which
scales with the vocabulary and the prompt, not with the tiny model.

    .venv/bin/python benchmarks/long_prompt_memory.py [--tokens 4000] [--vocab 151936]
"""

from __future__ import annotations

import argparse
import json
import resource


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=4000)
    p.add_argument("--vocab", type=int, default=151936)
    p.add_argument("--layers", type=int, default=4)
    args = p.parse_args()

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from specguard_integrations.backends.local.model import LocalCausalLM
    from specguard_integrations.backends.local.sessions import LocalDraftSession
    from specguard_integrations.engine.backends import SignalSettings
    from specguard_integrations.testing import char_tokenizer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=args.tokens + 64,
    )
    lm = LocalCausalLM(LlamaForCausalLM(cfg).eval(), char_tokenizer(), name="tiny-151k")
    ids = torch.randint(0, args.vocab, (args.tokens,), device="cpu").tolist()
    before = peak_mib()
    session = LocalDraftSession(lm, ids, SignalSettings(rollout_layers=3))
    after = peak_mib()
    mass = session.state.mass
    print(
        json.dumps(
            {
                "tokens": args.tokens,
                "vocab": args.vocab,
                "peak_growth_mib": round(after - before, 1),
                "mass_positions": None if mass is None else int(mass[-1].shape[0]),
            }
        )
    )


if __name__ == "__main__":
    main()
