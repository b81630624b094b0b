"""Step 2 of the loop: pick the most self-consistent of k candidate steps.

With unit embeddings ``e_j`` and ``S = E Eᵀ`` (cosine similarity)::

    j* = argmax_j sum_{l != j} exp(S[j, l])

the medoid of the candidates. The default embedding is the mean of the draft's last hidden
state over the step, which the sampling pass already computed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def consistency_scores(embeddings: torch.Tensor) -> torch.Tensor:
    """`(k, d)` embeddings -> `(k,)` scores `sum_{l != j} exp(S[j, l])`."""
    import torch

    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)  # (k, d)
    s = e @ e.T  # (k, k)
    w = torch.exp(s)
    return w.sum(dim=-1) - torch.diagonal(w)  # (k,)


# scores this close to the best tie; the first in sampling order wins, so float noise (a grouped
# forward's batch shape moves hidden states by ~1e-6) never flips a pick between equal steps
TIE = 1e-4


def select(embeddings: torch.Tensor) -> int:
    """j*, the index of the candidate most similar to the others (0 when k = 1); ties within
    `TIE` keep sampling order."""
    if embeddings.shape[0] <= 1:
        return 0
    scores = consistency_scores(embeddings)
    return int((scores >= scores.max() - TIE).nonzero()[0, 0])


def jaccard_medoid(texts: list[str]) -> int:
    """j* under word-set Jaccard similarity, for candidates without embeddings (a remote draft):
    ``argmax_j sum_{l != j} J(w_j, w_l)``; ties keep sampling order."""
    words = [set(t.split()) for t in texts]

    def jac(a: set[str], b: set[str]) -> float:
        return len(a & b) / len(a | b) if a | b else 1.0

    score = [sum(jac(w, v) for j, v in enumerate(words) if j != i) for i, w in enumerate(words)]
    return max(range(len(texts)), key=lambda i: (score[i], -i)) if texts else 0
