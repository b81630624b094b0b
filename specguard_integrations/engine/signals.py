"""Step 3 of the loop: the two draft-internal signals, as pure tensor functions.

Confidence (LPBV)::

    l = min_t log p_draft(s_t | ctx, s_<t)            raw log-softmax, temperature 1

Grounding (ABGV), attention rollout over the last n layers (paper: n = 3)::

    A_l = mean_heads( attn_l * [attn_l >= 0.01] )     rows: query positions, cols: key positions
    R   = A_L · A_{L-1} · A_{L-2}
    G(t) = sum_{j in ctx} R[t, j]                     ctx = prompt + accepted steps
    g   = min_{t in step} G(t)

`R` is never formed. With ``m0 = 1[j in ctx]`` the product is applied to a vector,
``R · m0 = A_L (A_{L-1} (A_{L-2} m0))``, and each intermediate vector ``m_i`` has one value per
position. Rows are causal, so a context position's values depend only on context positions and
never change once that position is committed: they are cached, and scoring a step needs only the
step's own attention rows. This gives exactly ``grounding_from_matrices`` (the literal matrix
product, kept as the reference) at a per-step cost linear in the prefix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import torch


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Raw log p(s_t) of each step token.

    Args:
        logits: `(T, V)`, row t is the draft's logits predicting step token t.
        tokens: `(T,)` step token ids.
    Returns:
        `(T,)` log-probabilities at temperature 1, no top-p.
    """
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)  # (T, V)
    return logp.gather(-1, tokens.long().unsqueeze(-1)).squeeze(-1)  # (T,)


def confidence(logprobs: torch.Tensor, how: str = "min") -> float:
    """l = min_t log p(s_t): the weakest token decides (the paper: no mean, no length
    normalisation). ``how="mean"``: l = mean_t log p(s_t), the variant of the method's summary."""
    if logprobs.numel() == 0:
        raise InvalidInputError("confidence of an empty step is undefined")
    return float(logprobs.mean() if how == "mean" else logprobs.min())


def join_heads(attn: torch.Tensor, heads: str | tuple[int, ...] = "mean") -> torch.Tensor:
    """`(H, Tq, Tk)` -> `(Tq, Tk)`: the mean of the heads (the paper), their max, or the mean of
    the given head indices."""
    if heads == "mean":
        return attn.mean(dim=0)
    if heads == "max":
        return attn.max(dim=0).values
    idx = [h for h in heads if 0 <= h < attn.shape[0]] if isinstance(heads, tuple) else []
    if not idx:
        raise InvalidInputError(
            f"attention_heads: no head of {heads!r} among {attn.shape[0]} heads"
        )
    return attn[idx].mean(dim=0)


def process_attention(
    attn: torch.Tensor,
    *,
    cut: float = 0.01,
    renormalize: bool = False,
    residual: bool = False,
    heads: str | tuple[int, ...] = "mean",
) -> torch.Tensor:
    """One layer's attention, sparsified and head-joined: the paper's `A_l` (some rows of it).

    Args:
        attn: `(H, Tq, Tk)` attention probabilities of the last `Tq` query positions over all `Tk`
            key positions (query row r sits at absolute position `Tk - Tq + r`).
        cut: entries below it are zeroed before joining heads.
        heads: how heads are joined (`join_heads`).
        renormalize: rescale each row to sum 1 after the cut (off in the paper).
        residual: return `0.5 * A + 0.5 * I` (off in the paper).
    Returns:
        `(Tq, Tk)` float32 rows of `A_l`.
    """
    import torch

    a = attn.float()
    a = torch.where(a >= cut, a, torch.zeros_like(a))  # (H, Tq, Tk)
    a = join_heads(a, heads)  # (Tq, Tk)
    if renormalize:
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
    if residual:
        tq, tk = a.shape
        eye = torch.zeros_like(a)
        rows, cols = torch.arange(tq, device=a.device), torch.arange(tk - tq, tk, device=a.device)
        eye[rows, cols] = 1.0
        a = 0.5 * a + 0.5 * eye
    return a


def propagate_mass(
    rows: list[torch.Tensor], prev_mass: list[torch.Tensor], new_ctx: torch.Tensor
) -> list[torch.Tensor]:
    """Rollout applied to the context indicator, for new positions only.

    Args:
        rows: per rollout layer, lowest first (`A_{L-2}, A_{L-1}, A_L`), the `(Tq, Tk)` rows of
            the new positions.
        prev_mass: `n + 1` vectors `m_0 .. m_n`, each `(Tk - Tq,)`, cached for earlier positions.
        new_ctx: `(Tq,)` `m_0` of the new positions: 1 where they count as context, else 0.
    Returns:
        `m_0 .. m_n` for the new positions, each `(Tq,)`; `m_n[t] = G(t) = (R · m_0)[t]`.
    """
    import torch

    mass = [new_ctx.float()]
    for i, a in enumerate(rows):
        # each layer's rows may sit on their own device (a model split by a device map)
        full = torch.cat([prev_mass[i].to(a.device), mass[i].to(a.device)])  # (Tk,)
        mass.append(a.float() @ full)  # (Tq,)
    return mass


def grounding(
    mass: list[torch.Tensor],
    how: str = "min",
    *,
    q: float = 0.1,
    content: torch.Tensor | None = None,
) -> float:
    """g from G(t) over the step tokens (`mass[-1]`, from `propagate_mass` with the step as
    non-context): ``min`` (the paper), ``mean``, the ``quantile`` q, or ``content_min``, the min
    over the tokens where `content` `(T,)` is true (all tokens when none is)."""
    g = mass[-1]  # (T,) G(t)
    if g.numel() == 0:
        raise InvalidInputError("grounding of an empty step is undefined")
    if how == "mean":
        return float(g.mean())
    if how == "quantile":
        import torch

        return float(torch.quantile(g.float(), q))
    if how == "content_min" and content is not None and bool(content.any()):
        return float(g[content].min())
    return float(g.min())


def content_tokens(pieces: list[str]) -> list[bool]:
    """Which tokens carry content, read off their text alone (no task knowledge): a digit, or a
    capitalised word of two letters or more (a name)."""
    out = []
    for piece in pieces:
        word = piece.strip()
        out.append(
            any(c.isdigit() for c in word)
            or (len(word) >= 2 and word[0].isupper() and word.isalpha())
        )
    return out


def rollout(layers: list[torch.Tensor]) -> torch.Tensor:
    """R = A_L · ... · A_{L-n+1} from full square matrices, lowest layer first. Reference only."""
    r = layers[0]
    for a in layers[1:]:
        r = a @ r  # (T, T)
    return r


def grounding_from_matrices(layers: list[torch.Tensor], ctx: torch.Tensor) -> torch.Tensor:
    """G = R · 1_ctx for every position, the literal formula. Reference for tests.

    Args:
        layers: processed `(T, T)` attention of each rollout layer, lowest first.
        ctx: `(T,)` 1 on context positions.
    Returns:
        `(T,)` G(t).
    """
    return rollout(layers) @ ctx.float()
