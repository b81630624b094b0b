"""Teacher-forced multi-hop probe: how sure is a model of each token of the gold steps?

Every token of the gold completion is scored under the model given the prompt and the gold
tokens before it, and sorted by its role in the step `The friend of X is Y.`:

- ``object``: Y, the fact lookup (the token after `` is``);
- ``subject``: X (the token after `` of``), copied from the previous step;
- ``answer``: the token after ``Answer:``;
- ``format``: everything else.

Accuracy is the share of tokens given probability > 0.5; a uniform guess over the 7-8 names in
the facts is about -2.1 nats.

    .venv/bin/python scripts/probe_multihop.py specguard_integrations/assets/target -n 30
"""

from __future__ import annotations

import argparse
import json
import math

import torch


def probe(path: str, n: int) -> dict[str, dict[str, float]]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specguard_integrations.tasks import make_split

    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    scores: dict[str, list[float]] = {}
    for item in make_split("multihop", "test", n):
        ids = tok(item.prompt + "".join(item.steps), return_tensors="pt").input_ids
        start = len(tok(item.prompt).input_ids)
        with torch.no_grad():
            logp = model(ids).logits.log_softmax(-1)[0]
        toks = ids[0].tolist()
        for j in range(start, len(toks)):
            before = tok.decode(toks[max(0, j - 2) : j])
            role = (
                "object"
                if before.endswith(" is")
                else "subject"
                if before.endswith(" of")
                else "answer"
                if before.endswith(":")
                else "format"
            )
            scores.setdefault(role, []).append(logp[j - 1, toks[j]].item())
    return {
        role: {
            "tokens": len(v),
            "mean_logp": round(sum(v) / len(v), 3),
            "accuracy": round(sum(x > math.log(0.5) for x in v) / len(v), 3),
        }
        for role, v in scores.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("model", help="model directory (with its tokenizer)")
    ap.add_argument("-n", type=int, default=30, help="held-out multi-hop items")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps(probe(args.model, args.n), indent=1))


if __name__ == "__main__":
    main()
