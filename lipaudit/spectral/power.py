"""Power iteration on a linear map known only through its forward function.

The adjoint comes from autograd: for a linear map A, the vector-Jacobian product of A with a
vector u is Aᵀu, whatever point it is taken at.  So any torch function that is linear in its
argument (a convolution, a pooling, a matrix product) can be measured without writing its
transpose by hand.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def forward_and_adjoint(
    forward: Callable[[Tensor], Tensor], x: Tensor, cotangent: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Return (A x, Aᵀ c) where c defaults to A x, so the second item is AᵀA x."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        y = forward(x)
        c = y.detach() if cotangent is None else cotangent
        if not y.requires_grad:  # forward ignores its input: the zero map
            return y.detach(), torch.zeros_like(x)
        (adjoint,) = torch.autograd.grad(y, x, grad_outputs=c, allow_unused=True)
    if adjoint is None:
        adjoint = torch.zeros_like(x)
    return y.detach(), adjoint.detach()


def power_iteration(
    forward: Callable[[Tensor], Tensor],
    input_shape: tuple[int, ...],
    *,
    iterations: int = 50,
    tol: float = 1e-7,
    device: torch.device = torch.device("cpu"),
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> float:
    """Lower estimate of ‖A‖₂ for the linear map ``forward`` acting on tensors of ``input_shape``.

    Iterates v ← AᵀA v / ‖AᵀA v‖ and returns ‖A v‖ for the last unit vector v, which can never
    exceed ‖A‖₂ (up to rounding): an estimate from below, never a bound.  Deterministic for a
    fixed seed: the start vector is drawn on the CPU, so the device does not change it.
    """
    generator = torch.Generator(device="cpu").manual_seed(seed)
    v = torch.randn(tuple(input_shape), generator=generator, dtype=torch.float64).to(device=device, dtype=dtype)
    v = v / torch.linalg.vector_norm(v)
    previous = 0.0
    for _ in range(max(0, iterations)):
        image, gram_image = forward_and_adjoint(forward, v)
        sigma = float(torch.linalg.vector_norm(image))
        length = torch.linalg.vector_norm(gram_image)
        if float(length) == 0.0:  # A v = 0 for this v; with a random start that means A = 0
            return sigma
        v = gram_image / length
        if abs(sigma - previous) <= tol * sigma:
            break
        previous = sigma
    with torch.no_grad():
        return float(torch.linalg.vector_norm(forward(v)))


def lanczos_operator(
    forward: Callable[[Tensor], Tensor],
    start: Tensor,
    *,
    steps: int = 12,
    tol: float = 1e-7,
    adjoint: Callable[[Tensor], Tensor] | None = None,
    check_every: int = 1,
) -> Tensor:
    """A unit vector close to the top right singular vector of the linear map ``forward``.

    Lanczos on AᵀA from ``start`` (one forward and one adjoint per step, the basis kept to form
    the Ritz vector; no reorthogonalisation, which the top Ritz pair does not need).  Much faster
    than power iteration when the top of the spectrum is clustered, as it is for convolutions.
    Every ``check_every`` steps it stops once the top Ritz value moved by less than ``tol``
    (relative) since the last check.  The caller evaluates ‖A v‖ for the returned v, a lower
    estimate of ‖A‖ that does not trust the recurrence.  ``adjoint`` is Aᵀ when the caller has it
    written out; otherwise autograd supplies it.
    """
    q = start / torch.linalg.vector_norm(start).clamp_min(1e-300)
    basis: list[torch.Tensor] = []
    alpha: list[float] = []
    beta: list[float] = []
    previous_q, previous_theta = None, 0.0
    for j in range(max(1, steps)):
        basis.append(q)
        if adjoint is None:
            _, w = forward_and_adjoint(forward, q)
        else:
            with torch.no_grad():
                w = adjoint(forward(q))
        a = float(torch.sum(q * w))
        alpha.append(a)
        w = w - a * q
        if previous_q is not None:
            w = w - beta[-1] * previous_q
        w = w - torch.sum(q * w) * q
        b = float(torch.linalg.vector_norm(w))
        if b <= 1e-12 * max(abs(a), previous_theta, 1e-300):
            break  # an invariant subspace: the Ritz values are exact
        if (j + 1) % max(1, check_every) == 0:
            theta = float(_tridiagonal_eigh(alpha, beta)[0][-1])
            if abs(theta - previous_theta) <= tol * abs(theta):
                break
            previous_theta = theta
        beta.append(b)
        previous_q, q = q, w / b
    top = _tridiagonal_eigh(alpha, beta[: len(alpha) - 1])[1][:, -1]
    ritz = sum(float(c) * v for c, v in zip(top, basis))
    return ritz / torch.linalg.vector_norm(ritz).clamp_min(1e-300)


def _tridiagonal_eigh(alpha: list[float], beta: list[float]) -> tuple[Tensor, Tensor]:
    tridiagonal = torch.diag(torch.tensor(alpha, dtype=torch.float64))
    if beta:
        off = torch.tensor(beta, dtype=torch.float64)
        tridiagonal += torch.diag(off, 1) + torch.diag(off, -1)
    return torch.linalg.eigh(tridiagonal)
