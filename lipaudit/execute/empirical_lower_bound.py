"""An empirical lower bound on the Lipschitz constant: how far the certified bound can be from the truth.

Three stages, all in float64 on the function the executor computes (the IR):

1. Random search: at ``samples`` random inputs, power iteration on JᵀJ (torch.func.jvp / vjp)
   estimates the Jacobian's spectral norm ‖J(x)‖.
2. Gradient ascent on the input from the best points, ``steps`` steps each, to raise ‖J(x)‖
   (with random moves where the slope of ‖J‖ is zero, as in piecewise-linear networks).
3. Pairs of points: x and y = x + t·v along the top singular direction v (t small: this confirms
   the Jacobian estimate), then gradient ascent on the ratio over both points, starting further
   apart (5·``steps`` Adam steps). The ratio ‖f(x) − f(y)‖ / ‖x − y‖ is a lower bound on the
   Lipschitz constant with no smoothness assumption.

The figure returned is the largest ratio of stage 3: a value actually achieved by two inputs
(evaluated in float64, with ‖x − y‖ kept well above rounding).
Several network inputs are treated as one concatenated input, several outputs as one
concatenated output (as the upper bound does).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..errors import ExecutionError
from ..ir import Graph
from .executor import GraphInterpreter

DEFAULT_SAMPLES = 16
DEFAULT_STEPS = 20
# No wall clock by default: the search does its samples and steps, so its figure is a function of the
# model and the settings.  A time limit (seconds) is taken only on request.
DEFAULT_TIME_LIMIT: float | None = None

_SCALES = (1.0, 2.0, 0.5)  # input scales cycled over the random samples (inputs ~ N(0, scale²))
_TOP = 4  # points carried from the random search into gradient ascent
_SCAN_ITERS = 8  # power iterations per random sample (warm-started from the best direction so far)
_REFINE_ITERS = 60  # power iterations on each carried point
_ASCENT_ITERS = 3  # power iterations after each ascent step (warm-started)
_PAIR_STEPS = (1e-3, 1e-5)  # |y − x| relative to the input's scale
_PAIR_SEPARATIONS = (1.0, 0.1, 0.3, 0.03)  # starting |y − x| / |x| of the pair ascents, one per carried point
_PAIR_STEPS_PER_STEP = 5  # pair-ascent steps per --steps (each is two forwards and a backward)
_PAIR_LR = 0.05  # Adam's step, relative to the input's scale
_MIN_SEPARATION = 1e-6  # |y − x| / max(1, |x|) below which a ratio is not counted (rounding would dominate)
_EXACT_SIDE = 64  # build the whole Jacobian when it has at most this many rows or columns…
_EXACT_ENTRIES = 20_000_000  # …and at most this many entries


@dataclass
class LowerBound:
    value: float  # max ‖f(x) − f(y)‖ / ‖x − y‖ over the pairs tried: achieved, so a true lower bound
    jacobian_norm: float  # the largest ‖J(x)·v‖ found (‖v‖ = 1): an estimate, reported for information
    samples: int
    steps: int
    seed: int
    notes: list[str] = field(default_factory=list)
    cut_short: bool = False  # a time limit the caller asked for stopped the search: the figure depends on the machine

    def to_dict(self) -> dict:
        return {
            "value": self.value,
            "jacobian_norm": self.jacobian_norm,
            "samples": self.samples,
            "steps": self.steps,
            "seed": self.seed,
        }


class _FlatFunction:
    """f: R^n → R^m, the network on its concatenated flattened inputs and float outputs."""

    def __init__(self, executor: GraphInterpreter, graph: Graph) -> None:
        self.executor = executor
        self.names = list(graph.inputs)
        self.shapes = []
        for name in self.names:
            shape = graph.shape(name)
            if shape is None or any(d is None or d < 0 for d in shape):
                raise ExecutionError(f"the shape of input '{name}' is not known", node=name, op="")
            self.shapes.append(tuple(int(d) for d in shape))
        self.sizes = [math.prod(shape) for shape in self.shapes]
        self.n = sum(self.sizes)

    def __call__(self, z: Tensor) -> Tensor:
        parts = torch.split(z, self.sizes)
        outputs = self.executor(*[p.reshape(s) for p, s in zip(parts, self.shapes)])
        floats = [o.reshape(-1) for o in outputs if o.is_floating_point()]
        if not floats:
            raise ExecutionError("the network has no float output", node="", op="")
        return torch.cat(floats)


class _Probe:
    """Jacobian-vector products at a point: forward mode where every op supports it, else double-vjp."""

    def __init__(self, f: _FlatFunction, m: int) -> None:
        self.f = f
        self.m = m
        self.forward_mode = True
        self.exact = min(m, f.n) <= _EXACT_SIDE and m * f.n <= _EXACT_ENTRIES
        self.vectorised = True

    def jacobian(self, x: Tensor) -> Tensor:
        """The m × n Jacobian: reverse mode by rows when m ≤ n, forward mode by columns otherwise."""
        rows = self.m <= self.f.n
        if self.vectorised:
            try:
                return (torch.func.jacrev if rows else torch.func.jacfwd)(self.f)(x).detach()
            except (NotImplementedError, RuntimeError):
                self.vectorised = False  # an op without a batching rule: one product at a time
        if rows:
            pull = torch.func.vjp(self.f, x)[1]
            basis = torch.eye(self.m, dtype=x.dtype, device=x.device)
            return torch.stack([pull(e)[0].detach() for e in basis])
        basis = torch.eye(self.f.n, dtype=x.dtype, device=x.device)
        return torch.stack([self.jvp(x, e) for e in basis], dim=1)

    def top(self, x: Tensor, v: Tensor, iters: int, tol: float = 0.0) -> tuple[float, Tensor, Tensor | None]:
        """(σ, v, u): the top singular value of J(x) and its vectors, exactly or by power iteration."""
        if not self.exact:
            return self.power(x, v, iters, tol)
        jacobian = self.jacobian(x)
        if not torch.isfinite(jacobian).all():
            return math.nan, v, None
        left, values, right = torch.linalg.svd(jacobian, full_matrices=False)
        return float(values[0]), right[0], left[:, 0]

    def jvp(self, x: Tensor, v: Tensor) -> Tensor:
        if self.forward_mode:
            try:
                return torch.func.jvp(self.f, (x,), (v,))[1]
            except (NotImplementedError, RuntimeError):
                self.forward_mode = False
        # J·v = ∂/∂u ⟨Jᵀu, v⟩, with the vjp made differentiable in u.
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            y = self.f(x)
            u = torch.zeros_like(y, requires_grad=True)
            (g,) = torch.autograd.grad(y, x, u, create_graph=True)
            (jv,) = torch.autograd.grad(g, u, v)
        return jv.detach()

    def vjp(self, x: Tensor, u: Tensor) -> Tensor:
        pull = torch.func.vjp(self.f, x)[1]
        return pull(u)[0].detach()

    def power(self, x: Tensor, v: Tensor, iters: int, tol: float = 0.0) -> tuple[float, Tensor, Tensor | None]:
        """(‖J v‖, v, J v / ‖J v‖) after ``iters`` power steps on JᵀJ from v (‖v‖ = 1)."""
        pull = torch.func.vjp(self.f, x)[1]
        sigma, u = 0.0, None
        for _ in range(max(1, iters)):
            jv = self.jvp(x, v)
            norm = float(torch.linalg.vector_norm(jv))
            if not math.isfinite(norm) or norm == 0.0:
                return (norm if math.isfinite(norm) else 0.0), v, jv
            previous, sigma, u = sigma, norm, jv / norm
            w = pull(u)[0].detach()
            w_norm = float(torch.linalg.vector_norm(w))
            if not math.isfinite(w_norm) or w_norm == 0.0:
                break
            v = w / w_norm
            if tol and abs(sigma - previous) <= tol * sigma:
                break
        return sigma, v, u

    def ascent_direction(self, x: Tensor, u: Tensor, v: Tensor) -> Tensor | None:
        """∇ₓ ⟨u, J(x) v⟩ (= ∇ₓ‖J(x)v‖ when u = Jv/‖Jv‖): a Hessian-vector product."""
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self.f(x), x, u, create_graph=True)
                if not g.requires_grad:
                    return None  # piecewise linear: J is locally constant
                (h,) = torch.autograd.grad((g * v).sum(), x, allow_unused=True)
        except RuntimeError:
            return None
        return None if h is None else h.detach()


def _unit(t: Tensor) -> Tensor:
    return t / torch.linalg.vector_norm(t)


class Deadline:
    """A time budget: ``passed`` once ``seconds`` have gone by (never, for None)."""

    def __init__(self, seconds: float | None) -> None:
        self.at = None if seconds is None else time.perf_counter() + max(0.0, seconds)
        self.hit = False

    @property
    def passed(self) -> bool:
        if self.at is not None and time.perf_counter() >= self.at:
            self.hit = True
        return self.hit


def empirical_lower_bound(
    graph: Graph,
    *,
    samples: int = DEFAULT_SAMPLES,
    steps: int = DEFAULT_STEPS,
    seed: int = 0,
    device: str | torch.device = "cpu",
    time_limit: float | None = DEFAULT_TIME_LIMIT,
    on_progress: Callable[[str], None] | None = None,
) -> LowerBound:
    """The largest ‖f(x) − f(y)‖/‖x − y‖ found (see the module docstring). Raises ExecutionError.

    ``time_limit``: only on request, seconds after which each stage stops and the search reports
    what it has found (a ratio two inputs achieved, so still a lower bound; ``cut_short`` and the
    notes say it stopped early).  Without it the work is the fixed ``samples`` and ``steps``.
    """
    if samples < 1 or steps < 0:
        raise ValueError("samples must be ≥ 1 and steps ≥ 0")
    with warnings.catch_warnings():
        # torch.func's first jvp scripts some decompositions, and torch.jit.script is deprecated.
        warnings.simplefilter("ignore", DeprecationWarning)
        try:
            return _search(graph, samples, steps, int(seed), torch.device(device), on_progress, Deadline(time_limit))
        except (RuntimeError, NotImplementedError) as error:  # autograd limits of some op: no figure, say why
            text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ExecutionError(f"the lower-bound search failed: {text}", node="", op="") from error


def _search(
    graph: Graph,
    samples: int,
    steps: int,
    seed: int,
    device: torch.device,
    on_progress: Callable[[str], None] | None,
    deadline: Deadline,
) -> LowerBound:
    f = _FlatFunction(GraphInterpreter(graph, device=device, dtype=torch.float64), graph)
    generator = torch.Generator().manual_seed(int(seed))

    def randn(*shape: int) -> Tensor:
        return torch.randn(*shape, generator=generator, dtype=torch.float64).to(device)

    n = f.n
    with torch.no_grad():
        m = int(f(randn(n)).numel())
    probe = _Probe(f, m)
    radius = math.sqrt(n)  # the norm of a standard normal input
    best_v = _unit(randn(n))
    found: list[tuple[float, Tensor, Tensor]] = []
    best_sigma = 0.0
    for index in range(samples):
        if index and deadline.passed:
            break
        if on_progress:
            on_progress(f"lower bound: sample {index + 1}/{samples}")
        x = randn(n) * _SCALES[index % len(_SCALES)]
        sigma, v, _ = probe.top(x, best_v, _SCAN_ITERS)
        if not math.isfinite(sigma):
            continue
        found.append((sigma, x, v))
        if sigma > best_sigma:
            best_sigma, best_v = sigma, v
    found.sort(key=lambda item: -item[0])

    refined: list[tuple[float, Tensor, Tensor]] = []
    for rank, (_, x, v) in enumerate(found[:_TOP]):
        if on_progress:
            on_progress(f"lower bound: ascent {rank + 1}/{min(_TOP, len(found))}")
        if rank and deadline.passed:
            break
        sigma, v, u = probe.top(x, v, _REFINE_ITERS, tol=1e-9)
        eta = 0.05
        for _ in range(steps):
            if deadline.passed:
                break
            direction = probe.ascent_direction(x, u, v) if u is not None else None
            if direction is None or not torch.isfinite(direction).all() or float(direction.abs().max()) == 0.0:
                direction = randn(n)  # no slope to follow: try a random move
            step = eta * max(float(torch.linalg.vector_norm(x)), 0.1 * radius)
            candidate = x + step * _unit(direction)
            new_sigma, new_v, new_u = probe.top(candidate, v, _ASCENT_ITERS)
            if math.isfinite(new_sigma) and new_sigma > sigma:
                x, sigma, v, u = candidate, new_sigma, new_v, new_u
                eta = min(eta * 1.5, 0.5)
            else:
                eta = max(eta * 0.5, 1e-4)
        sigma, v, u = probe.top(x, v, _REFINE_ITERS, tol=1e-9)
        refined.append((sigma, x, v))

    best_ratio = 0.0
    with torch.no_grad():
        for _, x, v in refined:
            fx = f(x)
            scale = max(float(torch.linalg.vector_norm(x)) / radius, 1.0)
            for t in _PAIR_STEPS:
                y = x + (t * scale) * v
                dx = float(torch.linalg.vector_norm(y - x))  # the step as represented, not as intended
                if dx == 0.0:
                    continue
                ratio = float(torch.linalg.vector_norm(f(y) - fx)) / dx
                if math.isfinite(ratio):
                    best_ratio = max(best_ratio, ratio)
    pair_steps = _PAIR_STEPS_PER_STEP * steps
    for rank, (_, x, v) in enumerate(refined):
        if pair_steps == 0 or deadline.passed:
            break
        if on_progress:
            on_progress(f"lower bound: pairs {rank + 1}/{len(refined)}")
        separation = _PAIR_SEPARATIONS[rank % len(_PAIR_SEPARATIONS)] * max(
            float(torch.linalg.vector_norm(x)), 0.1 * radius
        )
        best_ratio = max(
            best_ratio,
            _pair_ascent(
                f,
                x,
                x + separation * v,
                pair_steps,
                _PAIR_LR * max(float(torch.linalg.vector_norm(x)) / radius, 1.0),
                deadline,
            ),
        )
    jacobian = max((s for s, _, _ in refined), default=best_sigma)
    notes = ["stopped at the time limit: the search was cut short"] if deadline.hit else []
    return LowerBound(best_ratio, jacobian, samples, steps, int(seed), notes, cut_short=deadline.hit)


def _pair_ascent(f: _FlatFunction, x: Tensor, y: Tensor, steps: int, lr: float, deadline: Deadline) -> float:
    """Gradient ascent (Adam) on ‖f(x) − f(y)‖ / ‖x − y‖ over both points; the largest ratio evaluated.

    Unlike ‖J(x)‖, the ratio has a useful slope in piecewise-linear networks: it sees across the
    kinks between x and y. Every value recorded is the ratio at two actual inputs.
    """
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    optimiser = torch.optim.Adam([x, y], lr=lr, maximize=True)
    best = 0.0
    for step in range(steps + 1):
        if step and deadline.passed:
            break
        optimiser.zero_grad()
        with torch.enable_grad():
            distance = torch.linalg.vector_norm(x - y)
            ratio = torch.linalg.vector_norm(f(x) - f(y)) / distance
        value, gap = float(ratio.detach()), float(distance.detach())
        if not math.isfinite(value):
            break
        if gap >= _MIN_SEPARATION * max(1.0, float(torch.linalg.vector_norm(x.detach()))):
            best = max(best, value)
        if step == steps:
            break
        ratio.backward()
        assert x.grad is not None and y.grad is not None  # both are leaves that require grad
        if not (torch.isfinite(x.grad).all() and torch.isfinite(y.grad).all()):
            break
        optimiser.step()
    return best


__all__ = ["DEFAULT_SAMPLES", "DEFAULT_STEPS", "LowerBound", "empirical_lower_bound"]
