"""Grouped forwards: many rows over their own KV caches in one model call, no cache copied.

A *group* is one sequence's KV cache (its prefix) and the `n` rows that continue it: the k
candidates of one request, or the one row of a sequence being fed. Every row's new tokens run
through the model together (embeddings, projections, MLPs and the LM head see one batch); only
attention is computed per group, by `grouped_attention`, over

    [prefix keys of the group (shared, read in place) | this row's own step keys]

so k candidates attend over one copy of their prefix, and requests with prefixes of different
lengths need no padding of their caches. Positions are each row's own, so every row computes what
it would compute alone (up to float summation order).

The cache layout and the attention function are in `grouped_cache.py`. Two uses here:

- `decode_jobs`: sampling loops, one token per row per forward; step keys stay in per-row
  buffers and are dropped (or, for a kept greedy step, appended to the prefix) at the end;
- `forward_jobs`: one forward of several sequences' pending tokens (right-padded to the
  longest); each sequence's valid keys are appended to its own cache, with its attention rows
  when asked.

A model whose attention layers do not follow transformers' attention interface (or whose layers
use sliding windows, sinks or soft-capping) is found by `supports_grouping`, which compares a
grouped forward with a plain one once; such a model runs row by row as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .grouped_cache import Group, GroupedCache, run

if TYPE_CHECKING:
    from .lm import LocalCausalLM


# ---------------------------------------------------------------- feeds: one forward, many caches
@dataclass
class ForwardJob:
    """Tokens to run over one sequence's cache (at `position` = the cache's length), as
    `LocalCausalLM.forward` would with a batch of one; the keys are appended to the cache."""

    cache: Any
    tokens: list[int]
    layers: int = 0  # last layers whose attention rows are returned
    hidden: bool = False
    out: Any = None  # FeedOut once run
    error: BaseException | None = None


def forward_jobs(lm: LocalCausalLM, jobs: list[ForwardJob]) -> None:
    """Run `jobs` in one grouped forward (right-padded to the longest); set each job's `out`."""
    import torch

    from .lm import FeedOut

    width = max(len(j.tokens) for j in jobs)
    fill = min(lm.eos_ids) if lm.eos_ids else 0
    ids = torch.tensor(
        [j.tokens + [fill] * (width - len(j.tokens)) for j in jobs], device=lm.device
    )
    start = torch.tensor([j.cache.get_seq_length() for j in jobs], device=lm.device)
    # padding repeats a row's last position (never past the model's position table)
    last = torch.tensor([len(j.tokens) - 1 for j in jobs], device=lm.device)
    steps = torch.minimum(torch.arange(width, device=lm.device), last.unsqueeze(1))
    positions = start.unsqueeze(1) + steps  # (B, T)
    layers = min(max(j.layers for j in jobs), lm.num_layers)
    capture = tuple(range(lm.num_layers - layers, lm.num_layers))
    cache = GroupedCache([Group(j.cache, 1, len(j.tokens)) for j in jobs], lm.num_layers, capture)
    out = run(lm, ids, positions, cache, hidden=any(j.hidden for j in jobs))
    lmax = int(cache.buckets[0].lengths.max())
    for b, job in enumerate(jobs):
        n, total = len(job.tokens), int(start[b])
        for layer in range(lm.num_layers):
            k, v = cache.keys[layer], cache.values[layer]
            assert k is not None and v is not None
            job.cache.update(k[b : b + 1, :, :n], v[b : b + 1, :, :n], layer)
        rows = None
        if job.layers:
            picked = capture[len(capture) - job.layers :]
            rows = [
                [
                    torch.cat([w[:, :n, :total], w[:, :n, lmax : lmax + n]], dim=-1)
                    for w in (cache.attn[la][b] for la in picked)
                ]
            ]
        job.out = FeedOut(
            logits=out.logits[b, :n].float(),
            hidden=out.hidden_states[-1][b, :n].float() if job.hidden else None,
            rows=rows,
        )


@dataclass
class DecodeJob:
    """One request's candidate sampling (`proposer.sample_steps`' arguments)."""

    state: Any  # SeqState, all ids fed
    settings: Any  # DecodeSettings
    generator: Any
    keep_cache: bool = False
    out: list[Any] | None = None  # candidates once run
    error: BaseException | None = None


def decode_jobs(lm: LocalCausalLM, jobs: list[DecodeJob]) -> None:
    """Sample every job's k candidate steps together, one token per row per forward: each job
    with its own temperature, top-p, generator, boundary and budget, as `sample_steps` would
    alone. Rows of a job share its prefix cache. A job that ends stays in the batch (feeding
    padding) until half the rows have ended; then the batch is compacted."""
    import torch

    from .proposer import cut_step, sample_next

    batch = [_Decoding(lm, job, cut_step) for job in sorted(jobs, key=lambda j: j.settings.k)]
    cache = GroupedCache([Group(d.job.state.cache, d.job.settings.k) for d in batch], lm.num_layers)
    fill = min(lm.eos_ids) if lm.eos_ids else 0
    t = 0
    while True:
        for i, d in enumerate(batch):
            if d.open:
                d.sample(sample_next, t, cache, i)
        live = [i for i, d in enumerate(batch) if d.open]
        if not live:
            return
        open_rows = sum(batch[i].job.settings.k for i in live)
        if open_rows * 2 <= sum(d.job.settings.k for d in batch):  # compact
            cache.keep(live)
            batch = [batch[i] for i in live]
        feed = [tok for d in batch for tok in (d.rows.last_tokens() if d.open else [fill] * d.k)]
        pos = [d.job.state.fed + t for d in batch for _ in range(d.k)]
        want = any(d.k > 1 and d.open for d in batch)
        out = run(
            lm,
            torch.tensor(feed, device=lm.device).view(-1, 1),
            torch.tensor(pos, device=lm.device).view(-1, 1),
            cache,
            hidden=want,
        )
        cache.step += 1
        lo = 0
        for d in batch:
            if d.open:
                d.logits = out.logits[lo : lo + d.k, -1].float()
                if d.k > 1:
                    d.rows.add_hidden(out.hidden_states[-1][lo : lo + d.k, -1].float())
                d.fed += 1
            lo += d.k
        t += 1


class _Decoding:
    """One job inside `decode_jobs`: its rows, next logits and tokens fed."""

    def __init__(self, lm: LocalCausalLM, job: DecodeJob, cut_step: Any) -> None:
        from .proposer import _Rows

        st, s = job.state, job.settings
        self.job, self.k, self.open, self.fed = job, s.k, True, 0

        def cut(ids: list[int]) -> Any:
            return cut_step(lm, ids, s.segmenter, s.stop, s.stop_tail)

        self.rows = _Rows(lm, s.k, cut, st.next_hidden if s.k > 1 else None)
        self.logits = st.next_logits.unsqueeze(0).expand(s.k, -1)

    def sample(self, sample_next: Any, t: int, cache: GroupedCache, group: int) -> None:
        """Take this step's tokens; close the job at its budget or when every row has ended."""
        s = self.job.settings
        try:
            self.rows.take(sample_next(self.logits, s.temperature, s.top_p, self.job.generator))
        except Exception as err:  # this job's own failure; its batch-mates go on
            self.job.error, self.open = err, False
            return
        if t == s.max_tokens - 1 or self.rows.done:
            self.open = False
            self._finish(cache, group)

    def _finish(self, cache: GroupedCache, group: int) -> None:
        out = self.rows.candidates()
        job = self.job
        if job.settings.k == 1:
            keep = max(0, min(self.fed, len(out[0].ids) - 1)) if job.keep_cache else 0
            out[0].fed = keep
            for layer in range(cache.num_layers) if keep else ():
                k, v = cache.row_keys(group, layer)
                job.state.cache.update(k[:, :, :keep], v[:, :, :keep], layer)
        job.out = out


# ---------------------------------------------------------------- which models can group
def supports_grouping(lm: LocalCausalLM) -> bool:
    """True when a grouped forward gives this model's own logits: a two-token prompt fed plain,
    then one token and a batch of two rows fed grouped, compared with the plain forward."""
    import torch
    from transformers import DynamicCache

    cfg = lm.model.config.get_text_config()
    if any(getattr(cfg, a, None) for a in _UNSUPPORTED):
        return False
    if getattr(cfg, "sliding_window", None) and getattr(cfg, "use_sliding_window", True):
        return False
    if any(t != "full_attention" for t in getattr(cfg, "layer_types", None) or ()):
        return False
    try:
        vocab = int(cfg.vocab_size)
        ids = [3 % vocab, 5 % vocab, 7 % vocab]
        plain = DynamicCache(config=lm.model.config)
        grouped = DynamicCache(config=lm.model.config)
        with torch.inference_mode():
            ref = lm.model(input_ids=torch.tensor([ids], device=lm.device), cache=plain).logits
            lm.model(input_ids=torch.tensor([ids[:2]], device=lm.device), cache=grouped)
            job = ForwardJob(grouped, ids[2:])
            other = ForwardJob(DynamicCache(config=lm.model.config), ids)
            forward_jobs(lm, [job, other])
        ok = torch.allclose(job.out.logits[-1], ref[0, -1].float(), atol=1e-3, rtol=1e-3)
        return ok and torch.allclose(other.out.logits, ref[0].float(), atol=1e-3, rtol=1e-3)
    except Exception:  # any architecture the grouped path cannot drive runs plain
        return False


# config fields of attention the grouped path does not reproduce
_UNSUPPORTED = ("attn_logit_softcapping", "alibi", "sliding_attention_map")
