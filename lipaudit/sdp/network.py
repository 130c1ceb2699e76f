"""The semidefinite bound's view of a network: neuron groups joined by dense linear maps.

A network here is a DAG with one input x ∈ ℝⁿ⁰, activation groups g = 0, 1, …, G−1 in topological
order, and one output y.  Group g holds ``size`` neurons; neuron i applies a scalar function whose
difference quotients lie in [α_i, β_i] (its *slope range*; per neuron, so that interval bounds on a
domain can narrow it later).  Every pre-activation and the output are linear combinations of the
input and of earlier groups' outputs:

    u_g = Σ_{(s, W) ∈ inputs(g)} W · z_s,      y = Σ_{(s, W) ∈ output} W · z_s,

where z_INPUT = x and z_j = v_j (group j's outputs, j < g).  Matrices are in the column convention
(``out × in``, as torch.nn.Linear stores them) and float64; weights stored in float32 are exact in
float64, so nothing is rounded.  Biases never change a Lipschitz constant and are left out.

Plain MLPs are the chain case (``from_mlp``); residual blocks x + W₂σ(W₁x) are expressed with the
stream eliminated (``from_residual_mlp``): every pre-activation reads the input and all earlier
groups through the products of the linear maps between them, so the semidefinite program sees the
skip connections exactly.  The stacked matrices (``stacked``) are what docs/design.md ('Semidefinite bound') calls
A (pre-activations) and B (output) over z = [x; v].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

INPUT = -1  # the source index of the network input in a connection


@dataclass(frozen=True)
class Connection:
    """``matrix`` (out × in) applied to the input (source = INPUT) or to group ``source``'s output.

    Where ``matrix`` was computed in floating point (a product of the network's matrices), the exact
    map lies within γ_rounding·magnitude of it entrywise (γ_k = k·2⁻⁵³/(1 − k·2⁻⁵³)): ``rounding``
    counts the rounded operations per entry and ``magnitude`` (≥ |matrix|) is the same expression in
    absolute values.  The certificate widens its error bound by both (certify.py), so the figure
    holds for the exact network, not only for the rounded matrices.
    """

    source: int
    matrix: np.ndarray
    rounding: int = 0
    magnitude: np.ndarray | None = None

    def bound(self) -> np.ndarray:
        return np.abs(self.matrix) if self.magnitude is None else self.magnitude


@dataclass(frozen=True)
class NeuronGroup:
    """One activation: per-neuron slope ranges [alpha_i, beta_i] and its pre-activation's inputs."""

    alpha: np.ndarray
    beta: np.ndarray
    inputs: tuple[Connection, ...]
    name: str = ""

    @property
    def size(self) -> int:
        return int(self.alpha.shape[0])


@dataclass(frozen=True)
class SdpNetwork:
    input_dim: int
    groups: tuple[NeuronGroup, ...]
    output: tuple[Connection, ...]

    def __post_init__(self) -> None:
        for index, group in enumerate(self.groups):
            if group.alpha.shape != group.beta.shape or group.alpha.ndim != 1:
                raise ValueError(f"group {index}: alpha and beta must be vectors of one length")
            if not (np.all(np.isfinite(group.alpha)) and np.all(np.isfinite(group.beta))):
                raise ValueError(f"group {index}: slope ranges must be finite")
            if np.any(group.alpha > group.beta):
                raise ValueError(f"group {index}: a slope range has alpha > beta")
            if not group.inputs:
                raise ValueError(f"group {index} reads nothing")
            self._check(group.inputs, index, group.size, f"group {index}")
        if not self.output:
            raise ValueError("the network has no output connection")
        rows = {c.matrix.shape[0] for c in self.output}
        if len(rows) != 1:
            raise ValueError("output connections disagree on the output size")
        self._check(self.output, len(self.groups), next(iter(rows)), "the output")

    def _check(self, connections: Sequence[Connection], before: int, rows: int, what: str) -> None:
        for c in connections:
            if not (c.source == INPUT or 0 <= c.source < before):
                raise ValueError(f"{what} reads source {c.source}, which is not earlier in the DAG")
            if c.matrix.ndim != 2 or c.matrix.shape != (rows, self.width(c.source)):
                raise ValueError(f"{what}: a matrix from source {c.source} has shape {c.matrix.shape}")
            if c.matrix.dtype != np.float64 or not np.all(np.isfinite(c.matrix)):
                raise ValueError(f"{what}: matrices must be finite float64")

    def width(self, source: int) -> int:
        return self.input_dim if source == INPUT else self.groups[source].size

    @property
    def neurons(self) -> int:
        return sum(g.size for g in self.groups)

    @property
    def output_dim(self) -> int:
        return int(self.output[0].matrix.shape[0])

    def offsets(self) -> list[int]:
        """Column offset of each source in z = [x; v_0; …; v_{G−1}] (the input's is 0, at index -1)."""
        starts = [self.input_dim]
        for group in self.groups[:-1]:
            starts.append(starts[-1] + group.size)
        return starts

    def rounding(self) -> int:
        """Rounded operations behind any entry of A or B (connections' own, plus summing connections)."""
        connections = [c for g in self.groups for c in g.inputs] + list(self.output)
        return max((c.rounding for c in connections), default=0) + len(connections)

    def magnitudes(self) -> tuple[np.ndarray, np.ndarray]:
        """Entrywise bounds |A| ≤ Â, |B| ≤ B̂ on the exact stacked matrices' absolute-value expressions."""
        bound = SdpNetwork(
            self.input_dim,
            tuple(
                NeuronGroup(g.alpha, g.beta, tuple(Connection(c.source, c.bound()) for c in g.inputs), g.name)
                for g in self.groups
            ),
            tuple(Connection(c.source, c.bound()) for c in self.output),
        )
        pre, out, _, _ = bound.stacked()
        return pre, out

    def stacked(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(A, B, alpha, beta): u = A·z for all neurons stacked, y = B·z, z = [x; v]."""
        n = self.input_dim + self.neurons
        starts = self.offsets()

        def columns(source: int) -> slice:
            begin = 0 if source == INPUT else starts[source]
            return slice(begin, begin + self.width(source))

        pre = np.zeros((self.neurons, n))
        row = 0
        for group in self.groups:
            for c in group.inputs:
                pre[row : row + group.size, columns(c.source)] += c.matrix
            row += group.size
        out = np.zeros((self.output_dim, n))
        for c in self.output:
            out[:, columns(c.source)] += c.matrix
        alpha = np.concatenate([g.alpha for g in self.groups]) if self.groups else np.zeros(0)
        beta = np.concatenate([g.beta for g in self.groups]) if self.groups else np.zeros(0)
        return pre, out, alpha, beta

    def forward(self, x: np.ndarray, activations: Sequence) -> np.ndarray:
        """Evaluate on a batch x (batch × input_dim) with one numpy function per group (for tests)."""
        values: dict[int, np.ndarray] = {INPUT: x}
        for index, (group, act) in enumerate(zip(self.groups, activations)):
            values[index] = act(sum(values[c.source] @ c.matrix.T for c in group.inputs))
        return sum(values[c.source] @ c.matrix.T for c in self.output)


def _f64(matrix) -> np.ndarray:
    if hasattr(matrix, "detach"):
        matrix = matrix.detach().cpu().numpy()
    return np.array(matrix, dtype=np.float64)


def _slopes(size: int, slopes) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) vectors from a scalar pair or from two per-neuron vectors."""
    lo, hi = slopes
    alpha, beta = (
        np.broadcast_to(np.asarray(lo, np.float64), (size,)),
        np.broadcast_to(np.asarray(hi, np.float64), (size,)),
    )
    return alpha.copy(), beta.copy()


def from_mlp(weights: Sequence, slopes: Sequence) -> SdpNetwork:
    """x ↦ W_L σ_{L−1}(⋯ σ_1(W_1 x)): ``weights`` W_1..W_L (out × in), ``slopes[k]`` the slope range of
    the activation after W_{k+1}, a pair of scalars or of per-neuron vectors (len(weights) − 1 of them).
    """
    mats = [_f64(w) for w in weights]
    if len(slopes) != len(mats) - 1:
        raise ValueError(f"{len(mats)} weight matrices need {len(mats) - 1} slope ranges, got {len(slopes)}")
    groups = []
    for k, (w, s) in enumerate(zip(mats[:-1], slopes)):
        alpha, beta = _slopes(w.shape[0], s)
        groups.append(NeuronGroup(alpha, beta, (Connection(k - 1, w),), name=f"layer {k + 1}"))
    return SdpNetwork(mats[0].shape[1], tuple(groups), (Connection(len(groups) - 1, mats[-1]),))


def from_residual_mlp(
    blocks: Sequence[tuple], slopes: Sequence, *, stem=None, head=None, head_slopes=None
) -> SdpNetwork:
    """h_0 = S·x (S = ``stem``, identity if None), h_k = h_{k−1} + W2_k σ_k(W1_k h_{k−1}) for ``blocks``
    [(W1_k, W2_k)], then y = H·h_K, or y = H·σ(h_K) when ``head_slopes`` is given (H = ``head``,
    identity if None).  The stream h is eliminated: h_k = S x + Σ_{j≤k} W2_j v_j, so every
    pre-activation reads x and the earlier groups through products of these matrices.
    """
    stem_m = None if stem is None else _f64(stem)
    pairs = [(_f64(w1), _f64(w2)) for w1, w2 in blocks]
    width = pairs[0][0].shape[1] if pairs else (stem_m.shape[0] if stem_m is not None else None)
    if width is None:
        raise ValueError("a residual MLP needs at least one block or a stem")
    input_dim = stem_m.shape[1] if stem_m is not None else width
    stem_m = np.eye(width) if stem_m is None else stem_m

    def through(matrix: np.ndarray, stream: list[Connection]) -> tuple[Connection, ...]:
        """``matrix`` applied to the stream h = Σ stream terms, as connections (rounded products)."""
        return tuple(
            Connection(c.source, matrix @ c.matrix, matrix.shape[1], np.abs(matrix) @ np.abs(c.matrix)) for c in stream
        )

    stream = [Connection(INPUT, stem_m)]  # h as a sum of connections
    groups: list[NeuronGroup] = []
    if len(slopes) != len(pairs):
        raise ValueError(f"{len(pairs)} blocks need {len(pairs)} slope ranges, got {len(slopes)}")
    for k, ((w1, w2), s) in enumerate(zip(pairs, slopes)):
        alpha, beta = _slopes(w1.shape[0], s)
        groups.append(NeuronGroup(alpha, beta, through(w1, stream), name=f"block {k + 1}"))
        stream.append(Connection(len(groups) - 1, w2))
    head_m = np.eye(width) if head is None else _f64(head)
    if head_slopes is not None:
        alpha, beta = _slopes(width, head_slopes)
        groups.append(NeuronGroup(alpha, beta, through(np.eye(width), stream), name="head activation"))
        output: tuple[Connection, ...] = (Connection(len(groups) - 1, head_m),)
    else:
        output = through(head_m, stream)
    return SdpNetwork(input_dim, tuple(groups), _merge(output))


def _merge(connections: Sequence[Connection]) -> tuple[Connection, ...]:
    """One connection per source (sums of matrices from the same source, one more rounding each)."""
    merged: dict[int, Connection] = {}
    for c in connections:
        if c.source in merged:
            m = merged[c.source]
            c = Connection(c.source, m.matrix + c.matrix, max(m.rounding, c.rounding) + 1, m.bound() + c.bound())
        merged[c.source] = c
    return tuple(merged.values())
