"""The figure of a chain of segments from their Jacobians' centres: the alignment a product of their
figures loses.

Segment i (cut c_{i−1} → c_i, lipaudit.domain.segments) has on a box that holds the image of B
an enclosure J_i(y) = C_i + E_i with ‖E_i‖₂ ≤ δ_i (its centre and min(‖R‖₂, deviation)). Read
n0-first (A = Jᵀ, as the enclosures are stored), the chain rule at x ∈ B gives A = A_1 A_2 ⋯ A_m,
and telescoping,

    A_1⋯A_m − C_1⋯C_m = Σ_i (A_1⋯A_{i−1}) E_i (C_{i+1}⋯C_m),

so sup_B ‖A‖₂ ≤ ‖C_1⋯C_m‖₂ + Σ_i F_{i−1}·δ_i·‖C_{i+1}⋯C_m‖₂, with F_{i−1} any certified bound on
sup_B ‖A_1⋯A_{i−1}‖₂ (1 for the empty prefix): the same sum one link shorter, or a figure found
otherwise for that prefix. A link may be one piece between two cuts or several (a longer segment has
a larger δ but no cross terms inside it): every split of the chain into the segments at hand is
tried, best prefix first. C_1⋯C_m is near the network's Jacobian at the centre, and each δ_i is
weighted by the norm of the centres after it, where the product of the segments' figures pays
‖C_i‖ + δ_i for every link.

The C_i are float64 matrices, exact as stored; their products carry their rounding entrywise
(|fl(XY) − XY| ≤ (k + 2)·2⁻⁵³·|X||Y|, k the inner size), so every norm here is certified.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..intervals.jacobian import UNIT, nonnegative_norm
from ..spectral.dense import dense_norm
from ..spectral.scaling import product_up
from .normal_range import tiny_entries

Link = tuple[torch.Tensor, float]  # a segment's centre (n_in, n_out) and its δ
# Every split of a prefix into links is tried while it has at most this many (they grow about 1.9×
# per piece with links of up to four pieces: 12 residual blocks had taken 35 s, 16 would take minutes).
MAX_SPLITS = 512


def chain_figures(
    centres: Sequence[torch.Tensor], deviations: Sequence[float], known: Sequence[float] | None = None
) -> list[float]:
    """F_j ≥ sup_B ‖A_1⋯A_j‖₂ for j = 1..m, from the links' centres (n_in, n_out) and deviations;
    ``known[j − 1]``: another certified figure for the prefix of j links (inf where none)."""
    links = {(i, i + 1): (c, d) for i, (c, d) in enumerate(zip(centres, deviations))}
    return best_chains(links, len(centres), known)[0]


def best_chains(
    links: Mapping[tuple[int, int], Link], pieces: int, known: Sequence[float] | None = None
) -> tuple[list[float], list[list[tuple[int, int]] | None]]:
    """For each prefix of b pieces (b = 1..pieces), the least figure over the ways of splitting it
    into consecutive links that ``links`` holds ((a, b): the segment of pieces a..b), each F_{i−1}
    being the best figure of its own prefix; and the split that gives it (None: ``known[b − 1]``,
    another certified figure for that prefix, was lower).  Past MAX_SPLITS ways for a prefix, only
    the best split of a shorter prefix extended by one link (a dynamic programme: fewer ways tried,
    every figure still certified)."""
    known = list(known) if known is not None else [math.inf] * pieces
    best = [1.0] + [math.inf] * pieces  # the empty prefix: the identity
    splits: list[list[tuple[int, int]] | None] = [None] * (pieces + 1)
    # the least-figure split of each prefix among those tried, whether or not ``known`` is lower
    chosen: list[list[tuple[int, int]] | None] = [[]] + [None] * pieces
    count = [1] + [0] * pieces  # how many splits each prefix has
    for b in range(1, pieces + 1):
        best[b] = known[b - 1]
        count[b] = sum(count[a] for a in range(b) if (a, b) in links)
        if count[b] <= MAX_SPLITS:
            tried = _splits(b, links)
        else:  # a deep chain: every way would be exponential, so each last link extends its prefix's split
            tried = [prefix + [(a, b)] for a in range(b) if (a, b) in links and (prefix := chosen[a]) is not None]
        least = math.inf
        for split in tried:
            value = _chained([links[link] for link in split], [best[a] for a, _ in split])
            if value < least:
                least, chosen[b] = value, split
        if least < best[b]:
            best[b], splits[b] = least, chosen[b]
    return best[1:], splits[1:]


def _splits(end: int, links: Mapping[tuple[int, int], Link]) -> list[list[tuple[int, int]]]:
    """Every way of covering pieces 0..end with consecutive links of ``links``."""
    if end == 0:
        return [[]]
    found: list[list[tuple[int, int]]] = []
    for a in range(end):
        if (a, end) in links:
            found.extend(split + [(a, end)] for split in _splits(a, links))
    return found


def _chained(links: Sequence[Link], before: Sequence[float]) -> float:
    """‖C_1⋯C_m‖ + Σ_i before_i·δ_i·‖C_{i+1}⋯C_m‖ (rounded up)."""
    centres = [c for c, _ in links]
    errors = []
    for i, (_, deviation) in enumerate(links):
        after = _norm(*_product(centres[i + 1 :]))
        errors.append(product_up(product_up(before[i], deviation), after))
    total = (_norm(*_product(centres)) + math.fsum(errors)) * (1 + (2 * len(links) + 4) * UNIT)
    return total if math.isfinite(total) else math.inf


def _product(matrices: Sequence[torch.Tensor]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """fl(X_1⋯X_k) and an entrywise bound on its distance from the exact product (None, None: the
    empty product, the identity)."""
    if not matrices:
        return None, None
    value = matrices[-1].to(torch.float64)
    error = torch.zeros_like(value)
    for left in reversed(matrices[:-1]):
        left = left.to(torch.float64)
        k = left.shape[1]
        size = left.abs()
        # X·(Y + e) = fl(XY) − r + X e with |r| ≤ γ|X||Y| and |X e| ≤ |X| err
        error = (size @ error + (k + 2) * UNIT * (size @ value.abs())) * (1 + (k + 4) * UNIT)
        value = left @ value
        if tiny_entries(value) or tiny_entries(error):  # the next product could leave the normal range
            return value, torch.full_like(error, math.inf)
    return value, error


def _norm(value: torch.Tensor | None, error: torch.Tensor | None) -> float:
    if value is None or error is None:
        return 1.0
    if value.numel() == 0:
        return 0.0
    return dense_norm(value).value * (1 + 1e-12) + nonnegative_norm(error)
