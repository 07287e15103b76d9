"""(c) AU-aware dynamic graph construction (Sec. III-C, Eq. 3).

N AU branches turn X_g into AU-specific maps F_i (one pointwise convolution each) and vectors
U_i = GAP(F_i). A sample-specific directed graph links every AU to the K AUs most similar by
inner product, and one graph convolution refines the nodes (Eq. 3):

    U_i' = sigma( U_i + g(U_i, sum_j r(U_j, a_ij)) )

with our explicit choices (the paper names g, r, sigma only as "learnable transformations"
and "a non-linear activation"):

* r(U_j, a_ij) = a_ij / K * W_r U_j: a linear message, averaged over the K neighbours so the
  scale does not grow with K (a row-normalised adjacency);
* g(U_i, m_i) = W_g [U_i ; m_i] + b_g: a linear map of the concatenation;
* sigma = ReLU.

Self is excluded from the K neighbours (a_ii = 0): Eq. 3 already carries U_i through its
residual term and through g, and "each node connected to its top-K most similar neighbours"
reads as K other AUs. K is capped at N - 1.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class AUBranches(nn.Module):
    """N pointwise convolutions C -> C, batched: X_g (B, C, H, W) -> F (B, N, C, H, W)."""

    def __init__(self, num_aus: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_aus, dim, dim))  # (N, C_out, C_in)
        self.bias = nn.Parameter(torch.empty(num_aus, dim))
        bound = 1 / math.sqrt(dim)  # nn.Conv2d's default initialisation, per branch
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x_g: torch.Tensor) -> torch.Tensor:
        f = torch.einsum("bchw,noc->bnohw", x_g, self.weight)
        return f + self.bias[None, :, :, None, None]


def topk_adjacency(u: torch.Tensor, k: int, self_loops: bool = False) -> torch.Tensor:
    """a_ij = 1 if AU j is among the top-k of AU i by Sim(i, j) = U_i^T U_j; (B, N, N).

    Directed: row i lists the neighbours of i. The diagonal is excluded unless ``self_loops``.
    """
    n = u.shape[-2]
    k = min(k, n if self_loops else n - 1)
    sim = u @ u.transpose(-1, -2)
    if not self_loops:
        eye = torch.eye(n, dtype=torch.bool, device=u.device)
        sim = sim.masked_fill(eye, float("-inf"))
    idx = sim.topk(k, dim=-1).indices
    return torch.zeros_like(sim).scatter_(-1, idx, 1.0)


class DynamicGraph(nn.Module):
    """Eq. 3 on a top-K inner-product graph: U (B, N, C) -> (U' (B, N, C), A (B, N, N))."""

    def __init__(self, dim: int, k: int = 4) -> None:
        super().__init__()
        self.k = k
        self.r = nn.Linear(dim, dim, bias=False)  # message of a neighbour
        self.g = nn.Linear(2 * dim, dim)  # update from [U_i ; aggregated messages]

    def forward(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        adj = topk_adjacency(u, self.k)
        msg = adj @ self.r(u) / adj.sum(-1, keepdim=True).clamp(min=1)
        return torch.relu(u + self.g(torch.cat([u, msg], dim=-1))), adj


class PerAULinear(nn.Module):
    """One FC per AU to a scalar logit: (B, N, C) -> (B, N)."""

    def __init__(self, num_aus: int, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_aus, dim))
        self.bias = nn.Parameter(torch.zeros(num_aus))
        nn.init.uniform_(self.weight, -1 / math.sqrt(dim), 1 / math.sqrt(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.weight).sum(-1) + self.bias
