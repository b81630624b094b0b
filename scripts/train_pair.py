"""Train the bundled draft/target pair on the synthetic task suites (seeded, CPU or GPU).

    .venv/bin/python scripts/train_pair.py tokenizer --out runs/pair
    .venv/bin/python scripts/train_pair.py model --role target --out runs/pair --minutes 45
    .venv/bin/python scripts/train_pair.py model --role draft --out runs/pair --minutes 45

Writes `OUT/tokenizer/` (a byte-level BPE `tokenizer.json` with a chat template), `OUT/ROLE/`
(`save_pretrained`, safetensors) and `OUT/ROLE.curve.jsonl` (loss and held-out accuracy over
training). Sequences are the plain prompt + gold steps + `</s>`, and the same conversation
rendered through the chat template ending in `<|end|>`; the loss covers completion tokens only.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import torch
from pair_data import SIZES, build_tokenizer, examples  # scripts/ is this script's directory

from specguard_integrations.tasks import FAMILIES, make_split


def batches(data, batch: int, rng: random.Random):
    """Padded batches; each pool of 64 batches is sorted by length first, so a long
    (ReAct-header) sequence does not pad 31 short ones to its length."""
    while True:
        rng.shuffle(data)
        chunks = []
        for p in range(0, len(data), 64 * batch):
            pool = sorted(data[p : p + 64 * batch], key=lambda x: len(x[0]))
            chunks += [pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)]
        rng.shuffle(chunks)
        for chunk in chunks:
            n = max(len(x) for x, _ in chunk)
            ids = torch.zeros(batch, n, dtype=torch.long)
            labels = torch.full((batch, n), -100, dtype=torch.long)
            for r, (x, start) in enumerate(chunk):
                ids[r, : len(x)] = torch.tensor(x)
                labels[r, start : len(x)] = torch.tensor(x[start:])
            yield ids, labels


@torch.inference_mode()
def greedy_accuracy(model, tok, n: int = 40) -> dict[str, float]:
    """Held-out final-answer accuracy per family, greedy, plain prompts (tools: real tool)."""
    from specguard_integrations.tasks import extract_answer

    model.eval()
    acc = {}
    eos = [tok.convert_tokens_to_ids("</s>")]
    for fam in FAMILIES:
        items = make_split(fam, "test", n)
        good = 0
        for item in items:
            text = item.prompt
            # tools: feed the real tool's observation after each Action Input line
            for _ in range(4):
                ids = torch.tensor([tok(text)["input_ids"]])
                gen = model.generate(
                    ids, max_new_tokens=60, do_sample=False, eos_token_id=eos, pad_token_id=0
                )
                new = tok.decode(gen[0, ids.shape[1] :], skip_special_tokens=True)
                if (
                    fam == "tools"
                    and "Action Input:" in new
                    and "Final Answer:" not in new.split("Action Input:")[0]
                ):
                    from specguard_integrations.tasks.base import calculator

                    head, rest = new.split("Action Input:", 1)
                    expr = rest.split("\n", 1)[0]
                    try:
                        obs = calculator(expr)
                    except ValueError:
                        obs = "error"
                    text += head + "Action Input:" + expr + f"\nObservation: {obs}\n"
                    continue
                text += new
                break
            good += extract_answer(text[len(item.prompt) :]) == item.answer
        acc[fam] = good / len(items)
    model.train()
    return acc


def train_model(args: argparse.Namespace) -> None:
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    tok = PreTrainedTokenizerFast.from_pretrained(out / "tokenizer")
    cfg = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=512,
        bos_token_id=1,
        eos_token_id=[tok.convert_tokens_to_ids("</s>"), tok.convert_tokens_to_ids("<|end|>")],
        pad_token_id=0,
        tie_word_embeddings=True,
        num_key_value_heads=SIZES[args.role]["num_attention_heads"],
        **SIZES[args.role],
    )
    model = LlamaForCausalLM.from_pretrained(args.init) if args.init else LlamaForCausalLM(cfg)
    params = sum(p.numel() for p in model.parameters())
    weights = {
        k: float(v) for k, v in (kv.split("=") for kv in args.family_weights.split(",") if kv)
    }
    data = examples(
        tok,
        args.per_family,
        args.seed,
        weights,
        args.react_share,
        args.multihop_curriculum,
        args.generic,
        args.made_up_params,
        args.system_share,
        args.name_case,
        args.tool_call_share,
        args.parallel,
    )
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    rng = random.Random(args.seed)
    stream = batches(data, args.batch, rng)
    curve = open(out / f"{args.role}.curve.jsonl", "w")  # noqa: SIM115 - closed after the loop
    deadline = time.time() + args.minutes * 60
    t0 = time.time()
    step = 0
    model.train()
    while time.time() < deadline and step < args.max_steps:
        frac = min(1.0, (time.time() - t0) / (args.minutes * 60))
        lr = (
            args.lr
            * min(1.0, (step + 1) / 100)
            * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        )
        for g in opt.param_groups:
            g["lr"] = lr
        ids, labels = next(stream)
        loss = model(input_ids=ids, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        if step % 50 == 0:
            rec = {"step": step, "minutes": (time.time() - t0) / 60, "loss": float(loss), "lr": lr}
            if step % args.eval_every == 0:
                rec["accuracy"] = greedy_accuracy(model, tok, 20)
                model.save_pretrained(out / f"{args.role}.checkpoint")
            curve.write(json.dumps(rec) + "\n")
            curve.flush()
    acc = greedy_accuracy(model, tok, 40)
    curve.write(json.dumps({"step": step, "final_accuracy": acc, "params": params}) + "\n")
    curve.close()
    model.generation_config.eos_token_id = cfg.eos_token_id
    model.generation_config.pad_token_id = 0
    model.save_pretrained(out / args.role)
    tok.save_pretrained(out / args.role)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["tokenizer", "model"])
    ap.add_argument("--out", default="runs/pair")
    ap.add_argument("--role", choices=["target", "draft"], default="target")
    ap.add_argument("--minutes", type=float, default=45)
    ap.add_argument("--max-steps", type=int, default=10**9)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--per-family", type=int, default=20000)
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--init", help="continue training from a saved model directory")
    ap.add_argument(
        "--family-weights",
        default="",
        help="e.g. multihop=2,arithmetic=1.5 (data share per family)",
    )
    ap.add_argument(
        "--react-share",
        type=float,
        default=0.0,
        help="share of tools items rendered as LlamaIndex ReAct chats (compact header)",
    )
    ap.add_argument(
        "--multihop-curriculum",
        default="",
        metavar="H1-H2:D1-D2",
        help="multi-hop items of H1-H2 hops among D1-D2 distractors (held-out: 2-3 among 4)",
    )
    ap.add_argument(
        "--generic",
        type=float,
        default=0.5,
        help="made-up-tool conversations, as a share of --per-family",
    )
    ap.add_argument(
        "--made-up-params",
        type=float,
        default=0.0,
        help="share of those whose parameter names are made up too",
    )
    ap.add_argument(
        "--system-share",
        type=float,
        default=0.0,
        help="share of chat renderings that start with a system turn",
    )
    ap.add_argument(
        "--name-case",
        type=float,
        default=0.0,
        help="share of tool conversations whose tool name is spelled in another case",
    )
    ap.add_argument(
        "--tool-call-share",
        type=float,
        default=0.0,
        help="share of tools items rendered as chat tool calls before the usual split",
    )
    ap.add_argument(
        "--parallel",
        type=float,
        default=0.0,
        help="two-computation conversations with both calls in one turn, a share of --per-family",
    )
    args = ap.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.what == "tokenizer":
        build_tokenizer(Path(args.out))
    else:
        train_model(args)


if __name__ == "__main__":
    main()
