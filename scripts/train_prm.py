"""Train the bundled tiny process reward model (PRM) for the reward-guided baseline (`rsd`).

    .venv/bin/python scripts/train_prm.py --out specguard_integrations/assets/prm --minutes 6

Data: the bundled draft writes steps on train-split items (sampled at temperature 1 and greedy),
each step labelled correct/incorrect by the family's checker. Each step is kept at random with
probability `--keep` and otherwise rewritten by the bundled target, so the contexts mix draft
and target steps as they do when `rsd` runs (with every step kept, the contexts would be the
draft's own chains only, which `rsd` rarely sees). The input is the
exact text the `rsd` verifier sees, ``context + step``. Model: a sequence-classification Llama
(one logit) initialised from the bundled draft's weights, trained with binary cross-entropy on
class-balanced batches; the checkpoint with the best AUROC on held-out items 460-499 (which
benchmarks and calibration do not use) is kept.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import torch

from specguard_integrations import SpecGuard, SpecGuardConfig
from specguard_integrations.assets import bundled_pair
from specguard_integrations.bench.runner import auroc
from specguard_integrations.engine.policy import RewardModelJudge
from specguard_integrations.registry import load_lm
from specguard_integrations.tasks import FAMILIES, make_split
from specguard_integrations.tasks.runner import solve_specguard


class Recorder:
    """A verifier that keeps a step with probability `keep` and remembers what it was shown."""

    name = "recorder"

    def __init__(self, keep: float, seed: int) -> None:
        self.seen: list[tuple[str, str]] = []
        self.keep = keep
        self.rng = random.Random(seed)

    def score(self, context: str, step: str) -> float:
        self.seen.append((context, step))
        return 1.0 if self.rng.random() < self.keep else 0.0


def collect(engine: SpecGuard, rec: Recorder, split: str, n: int, seeds: int):
    data = []
    for fam in FAMILIES:
        if split == "test":  # the end of the held-out split: benchmarks and calibration use
            items = make_split(fam, "test", 500)[-n:]  # its beginning (0-99) and 400-459
        else:
            items = make_split(fam, "train", n, seed=3)
        for it in items:
            for s in range(seeds):
                cfg = SpecGuardConfig(
                    k=1,
                    temperature=1.0 if s else 0.0,
                    top_p=1.0,
                    tau=0.5,
                    seed=s,
                    max_step_tokens=48,
                    max_new_tokens=160,
                )
                rec.seen.clear()
                solved = solve_specguard(engine, it, cfg)
                for i, ((ctx, step), r) in enumerate(zip(rec.seen, solved.records, strict=True)):
                    assert step == r.draft_text
                    data.append((ctx + step, it.check_step(i, step).ok, fam))
    return data


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/prm")
    ap.add_argument("--per-family", type=int, default=300)
    ap.add_argument("--seeds", type=int, default=3, help="greedy + (seeds - 1) sampled passes")
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--keep", type=float, default=0.5, help="share of draft steps kept")
    ap.add_argument("--curve", default="docs/training/prm.curve.jsonl")
    return ap.parse_args()


def train(args: argparse.Namespace, base: Path, tok: Any, train_set: list, test: list) -> None:
    """Train the PRM head on `train_set`; keep the checkpoint with the best held-out AUROC."""
    from transformers import AutoModelForSequenceClassification

    rng = random.Random(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    pos = [x for x in train_set if x[1]]
    neg = [x for x in train_set if not x[1]]

    def encode(texts: list[str]) -> dict[str, torch.Tensor]:
        return tok(texts, return_tensors="pt", padding=True, truncation=True, max_length=512)

    def evaluate() -> float:
        model.eval()
        scores = []
        with torch.inference_mode():
            for i in range(0, len(test), 64):
                chunk = test[i : i + 64]
                scores += model(**encode([x[0] for x in chunk])).logits[:, 0].tolist()
        model.train()
        return auroc(scores, [x[1] for x in test]) or float("nan")

    out = Path(args.out)
    curve = []
    best = (-1.0, 0)
    step = 0
    deadline = time.time() + 60 * args.minutes
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    while time.time() < deadline:
        batch = rng.sample(pos, args.batch // 2) + rng.sample(neg, args.batch // 2)
        enc = encode([x[0] for x in batch])
        y = torch.tensor([float(x[1]) for x in batch])
        loss = loss_fn(model(**enc).logits[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 100 == 0:
            a = evaluate()
            curve.append({"step": step, "loss": float(loss), "heldout_auroc": a})
            print(json.dumps(curve[-1]))
            if a > best[0]:  # keep the checkpoint with the best validation AUROC
                best = (a, step)
                model.save_pretrained(out)
                tok.save_pretrained(out)
    Path(args.curve).write_text("".join(json.dumps(c) + "\n" for c in curve))
    print(
        f"{step} steps in {args.minutes} min; kept step {best[1]} with validation AUROC "
        f"{best[0]:.3f}; saved to {out}"
    )


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    t0 = time.time()
    d, t = bundled_pair()
    draft, target = load_lm(str(d), device="cpu"), load_lm(str(t), device="cpu")
    rec = Recorder(args.keep, args.seed)
    engine = SpecGuard(draft, target, judge=RewardModelJudge(rec))
    train_set = collect(engine, rec, "train", args.per_family, args.seeds)
    test = collect(engine, rec, "test", 40, 2)  # validation: held-out items 460-499
    print(
        f"data: {len(train_set)} train steps ({sum(y for _, y, _ in train_set)} correct), "
        f"{len(test)} held-out steps, {time.time() - t0:.0f}s"
    )
    train(args, d, draft.tokenizer, train_set, test)


if __name__ == "__main__":
    main()
