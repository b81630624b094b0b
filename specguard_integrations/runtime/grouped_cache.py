"""The grouped cache and attention: many rows over their own KV caches in one model call.

A *group* is one sequence's KV cache (its prefix) and the `n` rows that continue it: the k
candidates of one request, or the one row of a sequence being fed. Every row's new tokens run
through the model together (embeddings, projections, MLPs and the LM head see one batch); only
attention is computed per group, by `grouped_attention`, over

    [prefix keys of the group (shared, read in place) | this row's own step keys]

as two parts of one softmax (a shared maximum and denominator), so k candidates attend over one
copy of their prefix, and requests with prefixes of different lengths need no padding of their
caches. Positions are each row's own, so every row computes what it would compute alone (up to
float summation order).
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import StateError

if TYPE_CHECKING:
    import torch

    from ..backends.local.model import LocalCausalLM

IMPLEMENTATION = "specguard_grouped"
_ACTIVE: contextvars.ContextVar[GroupedCache | None] = contextvars.ContextVar(
    "specguard_grouped_cache", default=None
)


@dataclass
class Group:
    """One prefix cache and the rows continuing it."""

    prefix: Any  # a DynamicCache of batch 1 (read; extended by a feed's commit)
    rows: int
    tokens: int = 1  # valid new tokens per row in a feed (right padding beyond)


@dataclass
class _Bucket:
    """Consecutive groups with the same number of rows: one attention call per layer."""

    lo: int  # first row
    groups: list[int]  # indices into GroupedCache.groups
    rows: int  # rows per group
    lengths: list[int]  # prefix length of each group
    keys: list[torch.Tensor | None] = field(default_factory=list)  # per layer (G, Hkv, Lmax, d)
    values: list[torch.Tensor | None] = field(default_factory=list)
    padding: torch.Tensor | None = None  # (G, Lmax) True past a prefix's end, on the device

    @property
    def hi(self) -> int:
        return self.lo + len(self.groups) * self.rows

    @property
    def width(self) -> int:
        """Lmax: the longest prefix of the bucket."""
        return max(self.lengths, default=0)

    def pad(self, device: Any) -> torch.Tensor:
        """`(G, Lmax)` padding positions of the padded prefixes, made once on `device`."""
        import torch

        if self.padding is None or self.padding.device != torch.device(device):
            lengths = torch.tensor(self.lengths, device=device)
            positions = torch.arange(self.width, device=device)
            self.padding = positions >= lengths.unsqueeze(-1)
        return self.padding


class GroupedCache:
    """What the model sees as its cache during grouped forwards: `update` appends each layer's
    new keys to per-row step buffers; `grouped_attention` reads them and the groups' prefixes,
    padded into one tensor per layer and bucket once (prefixes do not change while it lives)."""

    is_compileable = False

    def __init__(self, groups: list[Group], num_layers: int, capture: tuple[int, ...] = ()):
        self.groups = groups
        self.num_layers = num_layers
        self.capture = set(capture)  # layers whose attention probabilities are kept
        self.keys: list[torch.Tensor | None] = [None] * num_layers  # (B, Hkv, s, d)
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.attn: dict[int, torch.Tensor] = {}  # layer -> (B, Hq, T, Lmax + s)
        self.is_sliding = [False] * num_layers
        self.is_linear = [False] * num_layers
        self.is_dummy = [False] * num_layers
        self.step = 0  # step tokens per row already in the buffers
        self.buckets = self._buckets()

    def _buckets(self) -> list[_Bucket]:

        out: list[_Bucket] = []
        row = 0
        for i, g in enumerate(self.groups):
            if not out or out[-1].rows != g.rows:
                out.append(_Bucket(row, [], g.rows, []))
            out[-1].groups.append(i)
            row += g.rows
        for b in out:
            b.lengths = [_length(self.groups[i].prefix) for i in b.groups]
            b.keys = [None] * self.num_layers
            b.values = [None] * self.num_layers
        return out

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
        """Append `(B, Hkv, T, d)` new keys to the rows' step buffers."""
        import torch

        old_k, old_v = self.keys[layer_idx], self.values[layer_idx]
        self.keys[layer_idx] = key_states if old_k is None else torch.cat([old_k, key_states], 2)
        self.values[layer_idx] = (
            value_states if old_v is None else torch.cat([old_v, value_states], 2)
        )
        return key_states, value_states

    def prefix(self, b: _Bucket, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The bucket's prefixes of `layer`, right-padded: `(G, Hkv, Lmax, d)` keys and values."""

        if b.width == 0:
            return None
        if b.keys[layer] is None:
            parts = [self.groups[i].prefix.layers[layer] for i in b.groups]
            ref = next(p.keys for p in parts if _length_of(p))
            shape = (len(parts), ref.shape[1], b.width, ref.shape[3])
            keys, values = ref.new_zeros(shape), ref.new_zeros(shape)
            for j, p in enumerate(parts):
                n = _length_of(p)
                if n:
                    keys[j, :, :n] = p.keys[0]
                    values[j, :, :n] = p.values[0]
            b.keys[layer], b.values[layer] = keys, values
        k, v = b.keys[layer], b.values[layer]
        assert k is not None and v is not None
        return k, v

    def keep(self, groups: list[int]) -> None:
        """Go on with these groups only (their rows, prefixes and step keys)."""
        import torch

        rows: list[int] = []
        lo = 0
        for i, g in enumerate(self.groups):
            if i in groups:
                rows += range(lo, lo + g.rows)
            lo += g.rows
        old = {i: b for b in self.buckets for i in b.groups}
        pos = {i: b.groups.index(i) for b in self.buckets for i in b.groups}
        self.groups = [self.groups[i] for i in groups]
        for layer in range(self.num_layers):
            for buf in (self.keys, self.values):
                t = buf[layer]
                if t is not None:
                    buf[layer] = t.index_select(0, torch.tensor(rows, device=t.device))
        new = self._buckets()
        for b in new:  # padded prefixes carried over, not rebuilt
            members = [groups[i] for i in b.groups]
            src = old[members[0]]
            if all(old[m] is src for m in members):
                sel = [pos[m] for m in members]
                for layer in range(self.num_layers):
                    for mine, theirs in ((b.keys, src.keys), (b.values, src.values)):
                        t = theirs[layer]
                        if t is not None:
                            picked = t.index_select(0, torch.tensor(sel, device=t.device))
                            mine[layer] = picked[:, :, : b.width]
        self.buckets = new

    def row_keys(self, group: int, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The step keys and values `(n, Hkv, s, d)` of a group's rows."""
        lo = sum(g.rows for g in self.groups[:group])
        k, v = self.keys[layer], self.values[layer]
        assert k is not None and v is not None
        return k[lo : lo + self.groups[group].rows], v[lo : lo + self.groups[group].rows]

    def __len__(self) -> int:
        return self.num_layers


def _length_of(layer: Any) -> int:
    keys = getattr(layer, "keys", None)
    return 0 if keys is None or keys.numel() == 0 else int(keys.shape[-2])


def _length(cache: Any) -> int:
    layers = getattr(cache, "layers", None)
    return _length_of(layers[0]) if layers else 0


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
    """Attention of `(B, Hq, T, d)` queries over [own prefix | own step keys], bucket by bucket.

    Within the step part, query i (step position s0 + i) sees step positions <= s0 + i; the
    prefix is seen up to its own length. Key heads are shared by Hq / Hkv query heads without
    repeating them; rows of one group read one copy of their prefix. Returns `(B, T, Hq, d)` as
    the attention interface expects.
    """
    import torch

    cache = _ACTIVE.get()
    if cache is None:
        raise StateError("grouped attention outside a grouped forward")
    layer = int(module.layer_idx)
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    outs = [_bucket_attention(query, cache, b, layer, scale) for b in cache.buckets]
    if layer in cache.capture:
        cache.attn[layer] = torch.cat([w for _, w in outs]) if len(outs) > 1 else outs[0][1]
    return torch.cat([o for o, _ in outs]).transpose(1, 2).contiguous(), None


def _bucket_attention(
    query: torch.Tensor, cache: GroupedCache, b: _Bucket, layer: int, scale: float
) -> tuple[torch.Tensor, Any]:
    """One bucket: `(G*n, Hq, T, d)` out, and its weights `(G*n, Hq, T, Lmax + s)` when the
    layer is captured. Softmax over [prefix | step] in two parts sharing one max and one
    denominator (the prefix is never concatenated with the step keys)."""
    import torch

    q = query[b.lo : b.hi]
    ks, vs = cache.keys[layer], cache.values[layer]
    assert ks is not None and vs is not None
    ks, vs = ks[b.lo : b.hi], vs[b.lo : b.hi]  # (G*n, Hkv, s, d)
    _, hq, t, d = q.shape
    n, groups = b.rows, len(b.groups)
    hkv, s = ks.shape[1], ks.shape[2]
    rep = hq // hkv
    q6 = q.reshape(groups, n, hkv, rep, t, d) * scale
    if layer in cache.capture:  # probabilities read by the rollout: scores in float32
        q6, ks, pre_keys = q6.float(), ks.float(), True
    else:
        pre_keys = False
    # step part, per row, causal: query i sits at step position s - t + i
    ss = torch.einsum("gnhrtd,gnhsd->ghnrts", q6, ks.reshape(groups, n, hkv, s, d)).float()
    qpos = torch.arange(s - t, s, device=q.device).unsqueeze(-1)
    ss = ss.masked_fill(torch.arange(s, device=q.device) > qpos, float("-inf"))
    ss = ss.reshape(groups, hkv, n * rep * t, s)
    top = ss.amax(-1, keepdim=True)
    pre = cache.prefix(b, layer)
    sp = None
    if pre is not None:  # prefix part: all rows of a group against its one padded copy
        qh = q6.permute(0, 2, 1, 3, 4, 5).reshape(groups, hkv, n * rep * t, d)
        keys = pre[0].float() if pre_keys else pre[0]
        sp = torch.matmul(qh, keys.transpose(-1, -2)).float()  # (G, Hkv, M, Lmax)
        sp = sp.masked_fill(b.pad(sp.device)[:, None, None, :], float("-inf"))
        top = torch.maximum(top, sp.amax(-1, keepdim=True))
    es = torch.exp(ss - top)
    den = es.sum(-1, keepdim=True)
    es6 = es.reshape(groups, hkv, n, rep, t, s).to(vs.dtype)
    out = torch.einsum("ghnrts,gnhsd->ghnrtd", es6, vs.reshape(groups, n, hkv, s, d))
    out = out.reshape(groups, hkv, n * rep * t, d).float()
    ep = None
    if sp is not None and pre is not None:
        ep = torch.exp(sp - top)
        den = den + ep.sum(-1, keepdim=True)
        out = out + torch.matmul(ep.to(pre[1].dtype), pre[1]).float()
    out = (out / den).to(q.dtype).reshape(groups, hkv, n, rep, t, d)
    out = out.permute(0, 2, 1, 3, 4, 5).reshape(groups * n, hq, t, d)
    weights = None
    if layer in cache.capture:
        w = es if ep is None else torch.cat([ep, es], dim=-1)
        w = (w / den).reshape(groups, hkv, n, rep, t, -1).permute(0, 2, 1, 3, 4, 5)
        weights = w.reshape(groups * n, hq, t, -1)
    return out, weights


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
    keep: int | list[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One grouped forward of `ids` `(B, T)` at `positions` `(B, T)`: logits `(B, K, V)` and
    last hidden states of the kept positions (`LocalCausalLM.model_call`)."""
    _register()
    token = _ACTIVE.set(cache)
    try:
        with lm.implementation(IMPLEMENTATION):
            return lm.model_call(ids, cache, positions=positions, hidden=hidden, keep=keep)
    finally:
        _ACTIVE.reset(token)
