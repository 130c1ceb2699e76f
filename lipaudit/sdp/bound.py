"""``sdp_bound``: the certified LipSDP-Neuron figure of a network, whole or per window.

The integrator's entry point.  It optimises the multipliers (optimise.py), inflates ρ slightly,
rounds it up to a float32 grid (so that tiny floating-point differences between runs, e.g. thread
counts, mostly give the same figure) and proves the matrix inequality (certify.py).  A figure is
reported only with its proof; otherwise ``figure`` is None and the caller keeps its own.

Networks with more neurons than ``max_neurons`` are cut into windows of consecutive groups where a
cut is possible (every later group and the output read the earlier part through one group only,
windows.py); the windows' figures multiply (Lip(f∘g) ≤ Lip(f)·Lip(g)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .certify import certify
from .matrix import Blocks
from .network import INPUT, SdpNetwork
from .optimise import evaluation_cost, minimise, path_gains
from .windows import split

DEFAULT_BUDGET = 10**11  # floating-point operations of the cost model (about 5 s of one core for 900 neurons)
MAX_NEURONS = 4096  # one program up to this many neurons (the dense Cholesky's N³/3 per step)
# ρ' = ρ·(1 + δ) for the first δ whose proof succeeds.
INFLATIONS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3)


@dataclass(frozen=True)
class SdpResult:
    figure: float | None  # certified upper bound on the ℓ2 Lipschitz constant, or None
    certified: bool
    method: str
    proof: str
    iterations: int


def product_figure(network: SdpNetwork) -> float:
    """The product-style bound: Σ over paths of ‖matrix‖₂ times the largest |slope| (the warm start
    when none is given, and the reference the bench compares with)."""
    # two_norm is within k·ε of the norm (k ≤ a few thousand): inside the 1e-11 slack.
    return path_gains(network)[INPUT] * (1 + 1e-11)


def _single(
    network: SdpNetwork, warm_start: float, budget: float, interior_budget: float = 0.0
) -> tuple[float | None, str, int]:
    if not network.groups:
        return None, "no activations: the SDP has nothing to add", 0
    blocks = Blocks.of(network)
    optimum = minimise(network, warm_start=warm_start, budget=budget, interior_budget=interior_budget)
    if not math.isfinite(optimum.rho) or optimum.rho <= 0:
        return None, "the optimiser found no feasible multipliers", optimum.iterations
    # The final point first; where its proof fails (it may sit on the boundary of feasibility after a
    # long run), the best points of the earlier stages, so that more work does not cost the figure.
    for stage, (lam, found_rho) in enumerate(((optimum.lam, optimum.rho), *optimum.earlier)):
        for inflation in INFLATIONS:
            rho = float(np.float32(found_rho * (1 + inflation)))
            if rho < found_rho * (1 + inflation):
                rho = float(np.nextafter(np.float32(rho), np.float32(np.inf)))
            certificate = certify(blocks, rho, lam)
            if certificate is not None:
                at = "" if stage == 0 else f", at the best point {stage} stage(s) before the end"
                proof = f"{certificate.describe()}; ρ inflated by {inflation:g}, {optimum.describe()}{at}"
                return certificate.figure, proof, optimum.iterations
    return None, f"the proof failed for every inflation up to {INFLATIONS[-1]:g}", optimum.iterations


def sdp_bound(
    problem: SdpNetwork,
    *,
    warm_start: float | None = None,
    budget: int = DEFAULT_BUDGET,
    max_neurons: int = MAX_NEURONS,
    interior_budget: float = 0.0,
) -> SdpResult:
    """The certified LipSDP-Neuron bound of ``problem`` (ℓ2 → ℓ2), within ``budget`` operations
    (``interior_budget``: more for the interior-point method, where the problem is one window).

    ``warm_start``: a known upper bound (the recursion's or the product figure); it scales the
    program and is not needed for soundness.  The result's ``figure`` may exceed it (the caller
    takes the minimum); it is None where the proof fails.
    """
    windows = split(problem, max_neurons)
    if windows is None:
        return SdpResult(None, False, "LipSDP-Neuron", f"more than {max_neurons} neurons with no cut", 0)
    costs = [evaluation_cost(Blocks.of(w)) if w.groups else 0.0 for w in windows]
    total_cost = sum(costs) or 1.0
    figure, proofs, iterations = 1.0, [], 0
    for window, cost in zip(windows, costs):
        # Only a scale for the program: the caller's figure where it has one for this window.
        start = warm_start if warm_start is not None and len(windows) == 1 else product_figure(window)
        found, proof, steps = _single(
            window, start, budget * cost / total_cost, interior_budget if len(windows) == 1 else 0.0
        )
        iterations += steps
        if found is None:
            return SdpResult(None, False, _method(windows), proof, iterations)
        figure *= found
        proofs.append(proof)
    if len(windows) > 1:
        figure *= 1 + 4 * len(windows) * 2.0**-53  # the product's own rounding
        proof = f"{len(windows)} windows, figures multiplied; " + " | ".join(proofs)
    else:
        proof = proofs[0]
    return SdpResult(figure, True, _method(windows), proof, iterations)


def _method(windows: list[SdpNetwork]) -> str:
    return "LipSDP-Neuron" if len(windows) == 1 else f"LipSDP-Neuron per window ({len(windows)})"
