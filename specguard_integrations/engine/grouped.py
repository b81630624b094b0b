"""Grouped forwards: many rows over their own KV caches in one model call, no cache copied.

A *group* is one sequence's KV cache (its prefix) and the `n` rows that continue it: the k
candidates of one request, or the one row of a sequence being fed. Every row's new tokens run
through the model together (embeddings, projections, MLPs and the LM head see one batch); only
attention is computed per group, by `grouped_attention`, over

    [prefix keys of the group (shared, read in place) | this row's own step keys]

so k candidates attend over one copy of their prefix, and requests with prefixes of different
lengths need no padding of their caches. Positions are each row's own, so every row computes what
it would compute alone (up to float summation order).

Two uses:

- `GroupedDecode`: sampling loops, one token per row per forward; step keys stay in per-row
  buffers and are dropped (or, for a kept greedy step, appended to the prefix) at the end;
- `grouped_feed`: one forward of several sequences' pending tokens (right-padded to the
  longest); each sequence's valid keys are appended to its own cache, with its attention rows
  when asked.

A model whose attention layers do not follow transformers' attention interface (or whose layers
use sliding windows, sinks or soft-capping) is found by `supports_grouping`, which compares a
grouped forward with a plain one once; such a model runs row by row as before.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from .lm import LocalCausalLM

IMPLEMENTATION = "specguard_grouped"
_ACTIVE: contextvars.ContextVar[GroupedCache | None] = contextvars.ContextVar(
    "specguard_grouped_cache", default=None
)


@dataclass
class Group:
    """One prefix cache and the rows continuing it."""

    prefix: Any  # a DynamicCache of batch 1 (read; extended by `commit`)
    rows: int
    tokens: int = 1  # valid new tokens per row in a feed (right padding beyond)
    keys: list[torch.Tensor | None] = field(default_factory=list)  # per layer (n, Hkv, t, d)
    values: list[torch.Tensor | None] = field(default_factory=list)
    attn: dict[int, torch.Tensor] = field(default_factory=dict)  # layer -> (n, H, T, L + t)


class GroupedCache:
    """What the model sees as its cache during a grouped forward: `update` stores each layer's
    new keys per group and `grouped_attention` reads prefixes and step keys from here."""

    is_compileable = False

    def __init__(self, groups: list[Group], num_layers: int, capture: tuple[int, ...] = ()):
        self.groups = groups
        self.num_layers = num_layers
        self.capture = set(capture)  # layers whose attention probabilities are kept
        for g in groups:
            g.keys = [None] * num_layers
            g.values = [None] * num_layers
        self.is_sliding = [False] * num_layers
        self.is_linear = [False] * num_layers
        self.is_dummy = [False] * num_layers
        self.step = 0  # step tokens per row already in the buffers

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.step

    def update(
        self,
        key_states: torch.Tensor,
        value_states: torch.Tensor,
        layer_idx: int,
        *a: Any,
        **k: Any,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Split `(B, Hkv, T, d)` new keys by group and append them to the groups' step keys."""
        import torch

        lo = 0
        for g in self.groups:
            hi = lo + g.rows
            kn, vn = key_states[lo:hi], value_states[lo:hi]
            old_k, old_v = g.keys[layer_idx], g.values[layer_idx]
            g.keys[layer_idx] = kn if old_k is None else torch.cat([old_k, kn], dim=2)
            g.values[layer_idx] = vn if old_v is None else torch.cat([old_v, vn], dim=2)
            lo = hi
        return key_states, value_states

    def __len__(self) -> int:
        return self.num_layers


def grouped_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention of `(B, Hq, T, d)` queries, per group, over [prefix | own step keys].

    Within the step part, query i (step position s0 + i) sees step positions <= s0 + i; the
    prefix is seen whole. Key heads are shared by Hq / Hkv query heads without repeating them.
    Returns `(B, T, Hq, d)` as the attention interface expects.
    """
    import torch

    cache = _ACTIVE.get()
    if cache is None:
        raise RuntimeError("grouped attention outside a grouped forward")
    layer = int(module.layer_idx)
    _, hq, t, d = query.shape
    scale = scaling if scaling is not None else d**-0.5
    outs = []
    lo = 0
    for g in cache.groups:
        q = query[lo : lo + g.rows]  # (n, Hq, T, d)
        lo += g.rows
        ks, vs = g.keys[layer], g.values[layer]  # (n, Hkv, s, d)
        assert ks is not None and vs is not None
        hkv = ks.shape[1]
        q5 = q.reshape(g.rows, hkv, hq // hkv, t, d)
        s = ks.shape[2]
        scores = [torch.einsum("nhrtd,nhsd->nhrts", q5, ks)]
        pk = _prefix_layer(g.prefix, layer)
        if pk is not None:
            scores.insert(0, torch.einsum("nhrtd,hLd->nhrtL", q5, pk[0][0]))
        x = torch.cat(scores, dim=-1) * scale  # (n, Hkv, rep, T, L + s)
        # causal within the step: query i sits at step position s - t + i
        qpos = torch.arange(s - t, s, device=q.device).unsqueeze(-1)
        kpos = torch.arange(s, device=q.device).unsqueeze(0)
        blocked = kpos > qpos  # (T, s)
        x[..., x.shape[-1] - s :] = x[..., x.shape[-1] - s :].masked_fill(blocked, float("-inf"))
        w = torch.softmax(x, dim=-1, dtype=torch.float32).to(q.dtype)
        out = torch.einsum("nhrts,nhsd->nhrtd", w[..., x.shape[-1] - s :], vs)
        if pk is not None:
            n_prefix = pk[0].shape[2]
            out = out + torch.einsum("nhrtL,hLd->nhrtd", w[..., :n_prefix], pk[1][0])
        if layer in cache.capture:
            g.attn[layer] = w.reshape(g.rows, hq, t, -1)
        outs.append(out.reshape(g.rows, hq, t, d))
    return torch.cat(outs).transpose(1, 2).contiguous(), None


def _prefix_layer(cache: Any, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(keys, values) `(1, Hkv, L, d)` of a prefix cache's layer, or None when empty."""
    if cache is None or layer >= len(cache.layers):
        return None
    lay = cache.layers[layer]
    keys = getattr(lay, "keys", None)
    if keys is None or keys.numel() == 0 or keys.shape[-2] == 0:
        return None
    return keys, lay.values


def _register() -> None:
    from transformers import AttentionInterface

    if IMPLEMENTATION not in AttentionInterface._global_mapping:
        AttentionInterface.register(IMPLEMENTATION, grouped_attention)


def run(
    lm: LocalCausalLM,
    ids: torch.Tensor,
    positions: torch.Tensor,
    cache: GroupedCache,
    *,
    hidden: bool = False,
) -> Any:
    """One grouped forward of `ids` `(B, T)` at `positions` `(B, T)`; the model's output."""
    _register()
    token = _ACTIVE.set(cache)
    try:
        with lm.implementation(IMPLEMENTATION):
            return lm.model(
                input_ids=ids,
                position_ids=positions,
                cache=cache,
                use_cache=True,
                output_hidden_states=hidden,
            )
    finally:
        _ACTIVE.reset(token)


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
    groups = [Group(j.cache, 1, len(j.tokens)) for j in jobs]
    cache = GroupedCache(groups, lm.num_layers, capture)
    hidden = any(j.hidden for j in jobs)
    out = run(lm, ids, positions, cache, hidden=hidden)
    for b, (job, g) in enumerate(zip(jobs, groups, strict=True)):
        n = len(job.tokens)
        for layer in range(lm.num_layers):
            k, v = g.keys[layer], g.values[layer]
            assert k is not None and v is not None
            job.cache.update(k[:, :, :n], v[:, :, :n], layer)
        total = int(start[b]) + n
        rows = None
        if job.layers:
            rows = [[g.attn[la][0, :, :n, :total] for la in capture[len(capture) - job.layers :]]]
        job.out = FeedOut(
            logits=out.logits[b, :n].float(),
            hidden=out.hidden_states[-1][b, :n].float() if job.hidden else None,
            rows=rows,
        )


# ---------------------------------------------------------------- decode: sampling loops
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
    alone. Rows of a job share its prefix cache; a job that ends leaves the batch."""
    import torch

    from .proposer import _Rows, cut_step, sample_next

    live: list[tuple[DecodeJob, Group, Any]] = []
    logits: dict[int, torch.Tensor] = {}
    for job in jobs:
        st, s = job.state, job.settings
        want_hidden = s.k > 1

        def cut(ids: list[int], s: Any = s) -> Any:
            return cut_step(lm, ids, s.segmenter, s.stop, s.stop_tail)

        rows = _Rows(lm, s.k, cut, st.next_hidden if want_hidden else None)
        live.append((job, Group(st.cache, s.k), rows))
        logits[id(job)] = st.next_logits.unsqueeze(0).expand(s.k, -1)
    cache = GroupedCache([g for _, g, _ in live], lm.num_layers)
    fed = {id(job): 0 for job in jobs}
    t = 0
    while live:
        still = []
        for job, g, rows in live:
            s = job.settings
            try:
                rows.take(sample_next(logits[id(job)], s.temperature, s.top_p, job.generator))
            except Exception as err:  # this job's own failure; its batch-mates go on
                job.error = err
                continue
            if t == s.max_tokens - 1 or rows.done:
                _finish(job, g, rows, fed[id(job)])
            else:
                still.append((job, g, rows))
        live = still
        if not live:
            break
        cache.groups = [g for _, g, _ in live]
        feed = torch.tensor([tok for _, _, r in live for tok in r.last_tokens()], device=lm.device)
        pos = torch.tensor(
            [j.state.fed + t for j, g, _ in live for _ in range(g.rows)], device=lm.device
        )
        want = any(j.settings.k > 1 for j, _, _ in live)
        out = run(lm, feed.view(-1, 1), pos.view(-1, 1), cache, hidden=want)
        cache.step += 1
        lo = 0
        for job, g, rows in live:
            logits[id(job)] = out.logits[lo : lo + g.rows, -1].float()
            if job.settings.k > 1:
                rows.add_hidden(out.hidden_states[-1][lo : lo + g.rows, -1].float())
            fed[id(job)] += 1
            lo += g.rows
        t += 1


def _finish(job: DecodeJob, g: Group, rows: Any, fed_rows: int) -> None:
    out = rows.candidates()
    if job.settings.k == 1:
        keep = max(0, min(fed_rows, len(out[0].ids) - 1)) if job.keep_cache else 0
        out[0].fed = keep
        if keep:
            for layer, (k, v) in enumerate(zip(g.keys, g.values, strict=True)):
                assert k is not None and v is not None
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
