"""Grouped forwards: many rows over their own KV caches in one model call, no cache copied
(the layout, the two-part softmax and why rows compute what they would alone:
`grouped_cache.py`). Two uses here:

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

from typing import TYPE_CHECKING

from ..backends.local.sampling import Rows, cut_step, sample_next
from ..backends.local.state import DecodeJob, FeedOut, ForwardJob
from .grouped_cache import Group, GroupedCache, run

if TYPE_CHECKING:
    import torch

    from ..backends.local.model import LocalCausalLM
    from ..engine.candidate import Candidate
    from ..types import StepFinish


# ---------------------------------------------------------------- feeds: one forward, many caches
def forward_jobs(lm: LocalCausalLM, jobs: list[ForwardJob]) -> None:
    """Run `jobs` in one grouped forward (right-padded to the longest); set each job's `out`."""
    import torch

    width = max(len(j.tokens) for j in jobs)
    fill = lm.pad_id
    ids = torch.tensor(
        [j.tokens + [fill] * (width - len(j.tokens)) for j in jobs], device=lm.device
    )
    starts = [j.cache.get_seq_length() for j in jobs]
    # padding repeats a row's last position (never past the model's position table)
    positions = torch.tensor(
        [
            [s + min(t, len(j.tokens) - 1) for t in range(width)]
            for s, j in zip(starts, jobs, strict=True)
        ],
        device=lm.device,
    )  # (B, T)
    layers = min(max(j.layers for j in jobs), lm.num_layers)
    capture = tuple(range(lm.num_layers - layers, lm.num_layers))
    cache = GroupedCache([Group(j.cache, 1, len(j.tokens)) for j in jobs], lm.num_layers, capture)
    # the positions whose logits some job keeps: its last `keep` (all when it keeps all)
    kept = sorted(
        {t for j in jobs for t in range(len(j.tokens) - (j.keep or len(j.tokens)), len(j.tokens))}
    )
    logits, hid = run(lm, ids, positions, cache, hidden=any(j.hidden for j in jobs), keep=kept)
    column = {t: c for c, t in enumerate(kept)}
    lmax = cache.buckets[0].width
    for b, job in enumerate(jobs):
        n, total = len(job.tokens), starts[b]
        picked_rows = [column[t] for t in range(n - (job.keep or n), n)]
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
            logits=logits[b, picked_rows].float(),
            hidden=hid[b, picked_rows].float() if job.hidden and hid is not None else None,
            rows=rows,
        )


def decode_jobs(lm: LocalCausalLM, jobs: list[DecodeJob]) -> None:
    """Sample every job's k candidate steps together, one token per row per forward: each job
    with its own temperature, top-p, generator, boundary and budget, as `sample_steps` would
    alone. Rows of a job share its prefix cache. A job that ends stays in the batch (feeding
    padding) until half the rows have ended; then the batch is compacted."""
    import torch

    batch = [_Decoding(lm, job) for job in sorted(jobs, key=lambda j: j.settings.k)]
    cache = GroupedCache([Group(d.job.state.cache, d.job.settings.k) for d in batch], lm.num_layers)
    fill = lm.pad_id
    t = 0
    while True:
        for i, d in enumerate(batch):
            if d.open:
                d.sample(t, cache, i)
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
        logits, hid = run(
            lm,
            torch.tensor(feed, device=lm.device).view(-1, 1),
            torch.tensor(pos, device=lm.device).view(-1, 1),
            cache,
            hidden=want,
            keep=1,
        )
        cache.step += 1
        lo = 0
        for d in batch:
            if d.open:
                d.logits = logits[lo : lo + d.k, -1].float()
                if d.k > 1 and hid is not None:
                    d.rows.add_hidden(hid[lo : lo + d.k, -1].float())
                d.fed += 1
            lo += d.k
        t += 1


class _Decoding:
    """One job inside `decode_jobs`: its rows, next logits and tokens fed."""

    def __init__(self, lm: LocalCausalLM, job: DecodeJob) -> None:
        st, s = job.state, job.settings
        self.job, self.k, self.open, self.fed = job, s.k, True, 0

        def cut(ids: list[int]) -> tuple[int, str, StepFinish] | None:
            return cut_step(lm, ids, s.segmenter, s.stop, s.stop_tail)

        assert st.next_logits is not None
        self.rows = Rows(lm, s.k, cut, st.next_hidden if s.k > 1 else None)
        self.logits: torch.Tensor = st.next_logits.unsqueeze(0).expand(s.k, -1)

    def sample(self, t: int, cache: GroupedCache, group: int) -> None:
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
        out: list[Candidate] = self.rows.candidates()
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
        assert job.out is not None and other.out is not None
        dtype = ref.dtype
        return _same(job.out.logits[-1:], ref[0, -1:], dtype) and _same(
            other.out.logits, ref[0], dtype
        )
    except Exception:  # any architecture the grouped path cannot drive runs plain
        return False


# how far logits computed two ways may differ, relative to their largest magnitude, by the
# precision they are computed in (bf16 keeps 8 bits of mantissa, fp16 11, fp32 24)
_TOLERANCE = {"torch.float32": 1e-3, "torch.float64": 1e-6}
_HALF_TOLERANCE = 5e-2


def _same(grouped: torch.Tensor, plain: torch.Tensor, dtype: torch.dtype) -> bool:
    """The same greedy token at every position, and logits within the dtype's tolerance."""
    a, b = grouped.float(), plain.float()
    tol = _TOLERANCE.get(str(dtype), _HALF_TOLERANCE) * max(1.0, float(b.abs().max()))
    return bool((a.argmax(-1) == b.argmax(-1)).all()) and float((a - b).abs().max()) <= tol


# config fields of attention the grouped path does not reproduce
_UNSUPPORTED = ("attn_logit_softcapping", "alibi", "sliding_attention_map")
