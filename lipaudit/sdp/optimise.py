"""The multipliers λ by a first-order method (docs/design.md ('Semidefinite bound') §4): no solver, torch float64 only;
programs small enough for the budget go to the interior-point method instead (interior.py, §4b).

For fixed λ the smallest feasible ρ is ρ*(λ) = λ_max(S(λ)) (matrix.py), a convex function of λ on
the convex set where −C_vv(λ) ≻ 0 (it is the partial minimum of a jointly convex program).  We
minimise a smooth upper approximation of it, the log-sum-exp of S's eigenvalues at temperature t,

    f_t(λ) = μ_max + (1/t)·log Σ_k exp(t(μ_k − μ_max)),     μ = eig S(λ),   μ_max ≤ f_t ≤ μ_max + log(n₀)/t,

over θ = log λ (which keeps λ > 0) with L-BFGS and a backtracking (Armijo) line search; a step that
leaves the feasible set (the Cholesky factorisation of −C_vv fails) counts as no decrease.  t grows
over a few stages (the memory is reset between them).  The figure kept is the true λ_max at the best
iterate, so the smoothing only costs optimality, never soundness — and the certificate re-proves
the final λ anyway.

Everything is deterministic: the iteration counts come from a work budget in floating-point
operations (a cost model of one evaluation), never from a clock; nothing is random.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .interior import EXPECTED_ITERATIONS, iteration_cost, solve
from .matrix import Blocks, SchurObjective
from .network import INPUT, SdpNetwork

MEMORY = 12  # L-BFGS pairs kept
ARMIJO = 1e-4
# The temperatures, relative to the figure at the start of each stage (1/t in units of ρ).
STAGES = (3e2, 3e3, 3e4, 3e5)
MIN_EVALUATIONS = 30
MAX_EVALUATIONS = 3000
MAX_ITERATIONS = 200  # of the interior-point method, whatever the budget
BACKTRACKS = 12
# A stage ends when its smoothed value has improved by less than this (relative) over STALL steps.
STALL, STALL_TOL = 10, 1e-7


@dataclass
class Optimum:
    lam: np.ndarray  # the multipliers, in the network's own scale
    rho: float  # λ_max(S(λ)) in floating point (not certified)
    evaluations: int
    iterations: int
    # The best (λ, ρ) at the end of each earlier stage, latest first: further from the boundary of
    # feasibility than the final point, so a proof that fails at the end may still succeed there.
    earlier: tuple[tuple[np.ndarray, float], ...] = ()
    converged: bool = False  # the interior-point method reached its gap (interior.py)
    interior: bool = False  # found by the interior-point method (``iterations`` are its iterations)

    def describe(self) -> str:
        if not self.interior:
            # Where it stops depends on the program's last bits: twins whose weights the exporters
            # rounded differently can get figures a few percent apart, both certified.
            return (
                f"{self.evaluations} evaluations of the first-order method, which stops on a fixed budget "
                "of work or when it stalls, not at a proven optimum (--recursion-budget runs it longer)"
            )
        reached = "gap reached" if self.converged else "stopped short of the gap"
        return f"{self.iterations} interior-point iterations ({reached})"


def evaluation_cost(blocks: Blocks) -> float:
    """Floating-point operations of one evaluation with its gradient (about 3× the forward pass)."""
    return cost_of(blocks.input_dim, blocks.neurons, int(np.count_nonzero(blocks.alpha * blocks.beta)))


def least_cost(network: SdpNetwork) -> float:
    """The operations the optimiser spends at the least (MIN_EVALUATIONS evaluations), whatever its budget."""
    curved = sum(int(np.count_nonzero(g.alpha * g.beta)) for g in network.groups)
    return least_cost_of(network.input_dim, network.neurons, curved)


def least_cost_of(n0: int, neurons: int, curved: int) -> float:
    """``least_cost`` from the sizes alone (n0 inputs, neurons, those with α·β ≠ 0)."""
    return MIN_EVALUATIONS * cost_of(n0, neurons, curved)


def cost_of(n0: int, neurons: int, curved: int) -> float:
    forward = neurons**3 / 3 + neurons**2 * n0 + neurons * n0**2 + 10 * n0**3 + 4 * neurons**2
    forward += 2 * curved * (neurons + n0) ** 2
    return 3.0 * forward


def two_norm(matrix: np.ndarray) -> float:
    """‖A‖₂ from the eigenvalues of the smaller Gram matrix (a few times cheaper than an SVD; within
    k·ε·‖A‖ of it, k the Gram's side)."""
    a = torch.as_tensor(np.asarray(matrix, np.float64))
    if a.numel() == 0:
        return 0.0
    gram = a @ a.T if a.shape[0] <= a.shape[1] else a.T @ a
    return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))


def path_gains(network: SdpNetwork) -> dict[int, float]:
    """D_g for each group g and for the input (INPUT): Σ over the paths to the output of the norms of
    their matrices times the largest |slope| of each group on the way (the product-style bound from g)."""
    norms: dict[int, float] = {}

    def norm(matrix: np.ndarray) -> float:
        key = id(matrix)
        if key not in norms:
            norms[key] = two_norm(matrix)
        return norms[key]

    gain = {g: 0.0 for g in range(len(network.groups))}
    gain[INPUT] = 0.0
    for c in network.output:
        gain[c.source] += norm(c.matrix)
    for h in range(len(network.groups) - 1, -1, -1):
        group = network.groups[h]
        slope = float(np.max(np.maximum(np.abs(group.alpha), np.abs(group.beta)), initial=0.0))
        for c in group.inputs:
            gain[c.source] += gain[h] * slope * norm(c.matrix)
    return gain


def initial_multipliers(network: SdpNetwork, objective: SchurObjective) -> Tensor:
    """λ = 2·D_g² on every neuron of group g, D_g the product-style gain from group g to the output
    (D_g = ‖B_g‖ + Σ_{h>g} D_h·max|slope_h|·‖A_{h,g}‖), then doubled until −C_vv is positive definite
    (with earlier groups weighed more where that fails).
    Any feasible start works; on a chain this one is the product bound's certificate, up to factors."""
    groups = network.groups
    found = path_gains(network)
    gain = [found[g] for g in range(len(groups))]
    top = max(gain, default=0.0) or 1.0
    per_neuron = np.concatenate([np.full(g.size, max(d, 1e-3 * top)) for g, d in zip(groups, gain)])
    # Doubling λ only outgrows BᵀB's block (the other terms scale with λ): 30 doublings (10⁹ over
    # the gains' 10⁻⁶ floor) do that or nothing will, and each try costs a factorisation of the whole
    # program.  Where the groups' cross terms win (deep residual programs read every earlier group),
    # earlier groups weigh more: λ_g times STEEPER^(G−1−g), doubled a few times.
    for steeper, doublings in ((1.0, 30), (4.0, 8), (16.0, 8)):
        depth = np.concatenate([np.full(g.size, steeper ** (len(groups) - 1 - k)) for k, g in enumerate(groups)])
        with np.errstate(over="ignore", invalid="ignore"):  # an infinite start fails the check below
            lam = torch.from_numpy(2.0 * per_neuron**2 * depth / objective.output_scale**2)
        for _ in range(doublings):
            if objective.eigenvalues(lam) is not None:
                return lam
            lam = lam * 2.0
    raise ArithmeticError("no feasible starting multipliers")


def minimise(network: SdpNetwork, *, warm_start: float, budget: float, interior_budget: float = 0.0) -> Optimum:
    """λ ≥ 0 that make ρ*(λ) small, with about ``budget`` floating-point operations of work.

    Where EXPECTED_ITERATIONS iterations of the interior-point method (interior.py) fit the budget,
    or ``interior_budget`` where that is larger, that method, which converges to the optimum (so the
    figure moves continuously with the weights, and twins whose weights differ in their last bits
    get figures that differ as little); where it stops short of its gap, the first-order method
    below with what is left of the budget, and the lower of the two."""
    blocks = Blocks.of(network)
    scale = warm_start if warm_start > 0 and math.isfinite(warm_start) else 1.0
    objective = SchurObjective(blocks, scale=scale)
    start = initial_multipliers(network, objective)
    step_cost = iteration_cost(blocks.input_dim, blocks.neurons, len(objective.curved))
    allowed = max(budget, interior_budget)
    if allowed < EXPECTED_ITERATIONS * step_cost:
        return _first_order(blocks, objective, start, budget, scale)
    try:
        solved = _interior(blocks, objective, start, int(min(MAX_ITERATIONS, allowed // step_cost)), scale)
    except ArithmeticError:  # the start was not strictly feasible in floating point
        return _first_order(blocks, objective, start, budget, scale)
    if solved.converged:
        return solved
    rest = _first_order(blocks, objective, start, budget - solved.evaluations * step_cost, scale)
    return solved if solved.rho <= rest.rho else rest


def _interior(blocks: Blocks, objective: SchurObjective, start: Tensor, iterations: int, scale: float) -> Optimum:
    eigenvalues = objective.eigenvalues(start)
    if eigenvalues is None:
        raise ArithmeticError("the starting multipliers are not strictly feasible")
    top = float(eigenvalues.max())
    # Any ρ above λ_max(S(λ)) is strictly feasible with λ; a margin keeps the start off the boundary.
    found = solve(blocks, scale, start, top + 0.5 * abs(top) + 1e-3, iterations)

    def rho_of(lam: np.ndarray) -> float:
        mu = objective.eigenvalues(torch.from_numpy(lam))
        return math.inf if mu is None else float(mu.max())

    # ρ*(λ) ≤ the iterate's ρ (the smallest feasible ρ for its λ).
    rho = min(rho_of(found.lam), found.rho)
    earlier = tuple((lam * scale**2, rho_of(lam) * scale**2) for lam in found.earlier)
    return Optimum(
        lam=found.lam * scale**2,
        rho=rho * scale**2,
        evaluations=found.iterations,
        iterations=found.iterations,
        earlier=tuple(e for e in earlier if math.isfinite(e[1]) and e[1] > rho * scale**2),
        converged=found.converged,
        interior=True,
    )


def _first_order(blocks: Blocks, objective: SchurObjective, start: Tensor, budget: float, scale: float) -> Optimum:
    theta = torch.log(start)
    allowed = int(min(MAX_EVALUATIONS, max(MIN_EVALUATIONS, budget / evaluation_cost(blocks))))
    evaluations = 0

    def value(th: Tensor, temperature: float) -> tuple[float, float, Tensor | None]:
        """(smoothed value, true λ_max, gradient in θ) at θ; inf where infeasible."""
        nonlocal evaluations
        evaluations += 1
        lam = torch.exp(th)
        found = objective.smoothed(lam, temperature)
        if found is None or not math.isfinite(found[0]):
            return math.inf, math.inf, None
        smooth, top, grad = found
        return smooth, top, grad * lam

    best_theta, best_rho = theta.clone(), value(theta, 1.0)[1]
    iterations = 0
    checkpoints: list[tuple[Tensor, float]] = []
    for index, relative in enumerate(STAGES):
        if math.isfinite(best_rho) and (not checkpoints or best_rho < checkpoints[-1][1]):
            checkpoints.append((best_theta.clone(), best_rho))
        # Each stage may use an equal share of what is left of the evaluations.
        stage_end = evaluations + (allowed - evaluations) // (len(STAGES) - index)
        temperature = relative / max(best_rho, 1e-300)
        f, top, grad = value(best_theta, temperature)
        theta = best_theta.clone()
        if grad is None:
            break
        history: list[tuple[Tensor, Tensor, float]] = []
        recent = [f]
        while evaluations < stage_end:
            iterations += 1
            direction = -_two_loop(grad, history)
            slope = float(direction @ grad)
            if slope >= 0:  # not a descent direction: restart from steepest descent
                history.clear()
                direction, slope = -grad, -float(grad @ grad)
            step = 1.0 if history else min(1.0, 0.5 / max(float(grad.abs().max()), 1e-300))
            for _ in range(BACKTRACKS):
                candidate = theta + step * direction
                f_new, top_new, grad_new = value(candidate, temperature)
                if grad_new is not None and f_new <= f + ARMIJO * step * slope:
                    break
                step *= 0.5
            else:
                break
            assert grad_new is not None
            s, y = candidate - theta, grad_new - grad
            if float(s @ y) > 1e-12 * float(s @ s) ** 0.5 * float(y @ y) ** 0.5:
                history.append((s, y, 1.0 / float(s @ y)))
                del history[:-MEMORY]
            theta, f, grad = candidate, f_new, grad_new
            if top_new < best_rho:
                best_rho, best_theta = top_new, theta.clone()
            recent.append(f)
            if len(recent) > STALL and recent[-STALL - 1] - f <= STALL_TOL * abs(f):
                break
    lam = torch.exp(best_theta).numpy() * scale**2
    earlier = tuple(
        (torch.exp(th).numpy() * scale**2, rho * scale**2) for th, rho in reversed(checkpoints) if rho > best_rho
    )
    return Optimum(lam=lam, rho=best_rho * scale**2, evaluations=evaluations, iterations=iterations, earlier=earlier)


def _two_loop(grad: Tensor, history: list[tuple[Tensor, Tensor, float]]) -> Tensor:
    """H·grad for the L-BFGS inverse-Hessian estimate H (identity-scaled without history)."""
    q = grad.clone()
    alphas = []
    for s, y, r in reversed(history):
        a = r * float(s @ q)
        alphas.append(a)
        q -= a * y
    if history:
        s, y, _ = history[-1]
        q *= float(s @ y) / float(y @ y)
    for (s, y, r), a in zip(history, reversed(alphas)):
        b = r * float(y @ q)
        q += (a - b) * s
    return q
