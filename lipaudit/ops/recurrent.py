"""Recurrent layers: LSTM, GRU and RNN over a fixed sequence length, unrolled.

Their gates multiply variable values, but the gates are bounded (sigmoid in [0, 1], tanh in
[−1, 1]), so an unrolled cell is Lipschitz even globally; the rule (lipaudit.intervals.recurrent)
bounds it step by step by the product rule, with the ranges of the gates and states. On a domain
those ranges come from the input box and the figure is local (labelled so); without one they come
from the activations alone and the figure is global.

Supported forms: the default activations (Sigmoid, Tanh, Tanh; an RNN's Tanh or Relu), no clip, input_forget = 0,
sequence_lens absent or equal to the sequence length, layout 0 or 1, any direction, peepholes.
Weights, biases and peepholes must be constants; the initial states may be computed.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..intervals.cells import Algebra, TorchAlgebra, gru_step, lstm_step, rnn_step
from ..intervals.interval import Interval
from ..intervals.recurrent import Unrolled, gru_direction, lstm_direction, rnn_direction
from ..ir import Node
from ..spectral.scaling import root_sum_squares
from .context import RuleContext, RuleInputError, domain_factor
from .factor import Factor
from .registry import Op, register
from .runtime import Env, cannot_run, ints

FAMILY = "recurrent"
_RUN = TorchAlgebra()
_DEFAULT_ACTIVATIONS = {"LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}


class Recurrent(Op):
    family = FAMILY
    resizes = True  # the rule bounds ‖ΔY‖ directly, whatever the hidden size
    data_inputs = None
    gates: ClassVar[int] = 4
    state_inputs: ClassVar[tuple[int, ...]] = (5, 6)  # initial_h, initial_c

    # ------------------------------------------------------------------ reading the node

    def activations(self, node: Node) -> list[str]:
        given = node.attrs.get("activations") or []
        return [(a.decode() if isinstance(a, bytes) else str(a)).lower() for a in given]

    def supported_activations(self, node: Node, activations: list[str]) -> bool:
        directions = 2 if node.attr_str("direction", "forward") == "bidirectional" else 1
        return not activations or activations == _DEFAULT_ACTIVATIONS[node.op_type] * directions

    def unsupported(self, node: Node) -> str:
        """Why this form has no rule or run ("" when it has both)."""
        activations = self.activations(node)
        if not self.supported_activations(node, activations):
            return f"{node.op_type} with activations {activations} has no rule yet"
        if node.has_attr("clip"):
            return f"{node.op_type} with clip has no rule yet"
        if node.attr_int("input_forget", 0):
            return "LSTM with input_forget has no rule yet"
        if node.has_attr("activation_alpha") or node.has_attr("activation_beta"):
            return f"{node.op_type} with activation parameters has no rule yet"
        return ""

    def directions(self, node: Node) -> list[bool]:
        """Whether each direction runs backwards in time."""
        return {"forward": [False], "reverse": [True], "bidirectional": [False, True]}[
            node.attr_str("direction", "forward")
        ]

    @staticmethod
    def _input(args: list[Any], index: int) -> Any:
        return args[index] if len(args) > index else None

    def check_lengths(self, node: Node, lengths: Any, steps: int) -> None:
        if lengths is not None and any(n != steps for n in ints(lengths)):
            raise cannot_run(node, "with sequence_lens shorter than the sequence")

    # ------------------------------------------------------------------ run

    def run(self, env: Env, node: Node, args: list[Any]) -> Any:
        why = self.unsupported(node)
        if why:
            raise cannot_run(node, f": {why}")
        x = args[0]
        if node.attr_int("layout", 0):
            x = x.transpose(0, 1)
        steps, batch = x.shape[0], x.shape[1]
        self.check_lengths(node, self._input(args, 4), steps)
        hidden = node.attr_int("hidden_size")
        ys, finals = [], []
        for d, backwards in enumerate(self.directions(node)):
            states = [self._state(node, args, i, d, batch, hidden, x) for i in self.state_inputs]
            order = range(steps - 1, -1, -1) if backwards else range(steps)
            outputs: list[Tensor] = [x.new_zeros(0)] * steps
            for t in order:
                states = self.step(node, args, d, x[t], states)
                outputs[t] = states[0]
            ys.append(torch.stack(outputs))
            finals.append(states)
        y = torch.stack(ys, dim=1)  # (T, directions, B, H)
        results = [y] + [torch.stack([s[k] for s in finals]) for k in range(len(self.state_inputs))]
        if node.attr_int("layout", 0):
            results = [y.permute(2, 0, 1, 3)] + [r.transpose(0, 1) for r in results[1:]]
        return results[: max(1, len(node.outputs))]

    def _state(
        self, node: Node, args: list[Any], index: int, direction: int, batch: int, hidden: int, x: Tensor
    ) -> Tensor:
        given = self._input(args, index)
        if given is None:
            return x.new_zeros(batch, hidden)
        return given.transpose(0, 1)[direction] if node.attr_int("layout", 0) else given[direction]

    def step(
        self, node: Node, args: list[Any], direction: int, x: Any, states: list[Any], alg: Algebra = _RUN
    ) -> list[Any]:
        """One step of direction ``direction``: the new states (hidden first) from input ``x`` and
        ``states``, in ``alg`` (torch tensors for the run; lipaudit.passes.unroll_recurrent writes
        the step out as graph nodes). ``args`` are the node's inputs, weights as tensors or arrays."""
        raise NotImplementedError

    # ------------------------------------------------------------------ ranges and bound

    def constants(self, node: Node, ctx: RuleContext) -> list[np.ndarray | None]:
        """W, R and B (zeros when absent); None for one computed from the input."""
        hidden = node.attr_int("hidden_size")
        directions = len(self.directions(node))
        given = len(node.inputs) > 3 and bool(node.inputs[3])
        return [
            ctx.const_input(node, 1),
            ctx.const_input(node, 2),
            ctx.const_input(node, 3) if given else np.zeros((directions, 2 * self.gates * hidden)),
        ]

    def _check_weight_shapes(self, node: Node, ctx: RuleContext) -> None:
        """W and R must have gates × hidden_size rows, R and the initial states hidden_size columns:
        torch's dynamo exporter writes nn.LSTM(proj_size=p) as an LSTM of hidden_size p with a cell
        state of the unprojected size, a file no runtime reads (onnxruntime refuses it too)."""
        hidden = node.attr_int("hidden_size")
        w, r = self.constants(node, ctx)[:2]
        rows = {np.shape(m)[-2] for m in (w, r) if m is not None and np.ndim(m) == 3}
        columns = {np.shape(r)[-1]} if r is not None and np.ndim(r) == 3 else set()
        for index in self.state_inputs:
            if len(node.inputs) > index and node.inputs[index]:
                columns.add(ctx.input_shape(node, index)[-1])
        if rows - {self.gates * hidden} or columns - {hidden}:
            raise RuleInputError(
                f"{node.op_type} '{node.name}' has weights or initial states for another size than its "
                f"hidden_size {hidden}: the file is inconsistent (onnxruntime refuses it too; torch's dynamo "
                "exporter writes nn.LSTM(proj_size=…) so)"
            )

    def unroll(self, node: Node, ctx: RuleContext, ranges: bool) -> list[Unrolled]:
        """Each direction unrolled, over the input's range (or the whole line when ``ranges`` is False)."""
        why = self.unsupported(node)
        if why:
            raise RuleInputError(why)
        shape = ctx.input_shape(node)
        layout = node.attr_int("layout", 0)
        steps, batch = (shape[1], shape[0]) if layout else (shape[0], shape[1])
        if len(node.inputs) > 4 and node.inputs[4]:
            lengths = ctx.const_input(node, 4)
            if lengths is None or np.any(np.asarray(lengths) != steps):
                raise RuleInputError(f"{node.op_type} with sequence_lens shorter than the sequence has no rule yet")
        self._check_weight_shapes(node, ctx)
        x = ctx.range_of(node.inputs[0]).broadcast_to(shape) if ranges else Interval.full(shape)
        if layout:
            x = Interval(np.swapaxes(x.lo, 0, 1), np.swapaxes(x.hi, 0, 1))
        hidden = node.attr_int("hidden_size")
        return [
            self.unroll_direction(
                node,
                ctx,
                d,
                [Interval(x.lo[t], x.hi[t]) for t in (range(steps - 1, -1, -1) if backwards else range(steps))],
                [self._state_range(node, ctx, i, d, batch, hidden, ranges) for i in self.state_inputs],
            )
            for d, backwards in enumerate(self.directions(node))
        ]

    def _state_range(
        self, node: Node, ctx: RuleContext, index: int, direction: int, batch: int, hidden: int, ranges: bool
    ) -> Interval:
        if len(node.inputs) <= index or not node.inputs[index]:
            return Interval.exact(np.zeros((batch, hidden)))
        name = node.inputs[index]
        shape = ctx.known_shape(node, name)
        interval = ctx.range_of(name) if (ranges or ctx.graph.is_const(name)) else Interval.full()
        interval = interval.broadcast_to(shape)
        pick = (lambda a: np.swapaxes(a, 0, 1)[direction]) if node.attr_int("layout", 0) else (lambda a: a[direction])
        return Interval(pick(interval.lo), pick(interval.hi))

    def unroll_direction(
        self, node: Node, ctx: RuleContext, direction: int, xs: list[Interval], states: list[Interval]
    ) -> Unrolled:
        raise NotImplementedError

    def factors(self, node: Node, ctx: RuleContext, unrolled: list[Unrolled]) -> list[tuple[float, float, float]]:
        """(input, h0, c0) weights of each output: Y, Y_h, Y_c."""
        per_direction = [
            [u.weights(u.a), u.weights(u.a[-1:]), u.weights(u.b[-1:] if u.b else u.a[-1:])] for u in unrolled
        ]
        combined = []
        for output in range(3):
            rows = [d[output] for d in per_direction]
            # Directions fill disjoint parts of each output; they share the input, each has its own states.
            combined.append((root_sum_squares(r[0] for r in rows), max(r[1] for r in rows), max(r[2] for r in rows)))
        return combined

    def bound_outputs(self, node: Node, ctx: RuleContext) -> list[Factor]:
        constants = self.constants(node, ctx)
        if any(c is None for c in constants):
            return [Factor.unbounded(f"{node.op_type} with variable weights multiplies two variable values")] * max(
                1, len(node.outputs)
            )
        unrolled = self.unroll(node, ctx, ranges=ctx.on_domain)
        weights = self.factors(node, ctx, unrolled)
        variable = [i for i, name in enumerate(node.inputs) if name and not ctx.graph.is_const(name)]
        out = []
        for output in range(max(1, len(node.outputs))):
            by_input = {0: weights[output][0], 5: weights[output][1], 6: weights[output][2]}
            per_position = [by_input.get(i, math.inf) for i in variable]
            value = max(per_position, default=0.0)
            note = f"unrolled over {len(unrolled[0].a)} steps, product rule on the gates' ranges"
            if ctx.on_domain:
                out.append(domain_factor(value, note, input_weights=per_position))
            else:
                out.append(
                    Factor.constant(
                        value, "closed-form", note=note + " (gates in [0, 1] and [−1, 1])", input_weights=per_position
                    )
                )
        return out

    def interval(self, node: Node, ctx: RuleContext) -> list[Interval | None]:
        if any(c is None for c in self.constants(node, ctx)):
            return [None] * len(node.outputs)
        unrolled = self.unroll(node, ctx, ranges=True)
        ys = []
        for u, backwards in zip(unrolled, self.directions(node)):
            in_time = u.hidden[::-1] if backwards else u.hidden
            ys.append((np.stack([h.lo for h in in_time]), np.stack([h.hi for h in in_time])))
        y = Interval(np.stack([lo for lo, _ in ys], axis=1), np.stack([hi for _, hi in ys], axis=1))
        finals = [_last(unrolled, "hidden")] + ([_last(unrolled, "cell")] if self.gates == 4 else [])
        if node.attr_int("layout", 0):
            y = Interval(np.transpose(y.lo, (2, 0, 1, 3)), np.transpose(y.hi, (2, 0, 1, 3)))
            finals = [Interval(np.swapaxes(f.lo, 0, 1), np.swapaxes(f.hi, 0, 1)) for f in finals]
        outputs: list[Interval | None] = [y, *finals]
        return outputs[: len(node.outputs)]


def _last(unrolled: list[Unrolled], state: str) -> Interval:
    """The final state of each direction, stacked: (directions, batch, hidden)."""
    finals = [getattr(u, state)[-1] for u in unrolled]
    return Interval(np.stack([f.lo for f in finals]), np.stack([f.hi for f in finals]))


def _split_bias(bias: np.ndarray | None, gates: int, hidden: int, direction: int) -> tuple[np.ndarray, np.ndarray]:
    if bias is None:
        return np.zeros(gates * hidden), np.zeros(gates * hidden)
    row = np.asarray(bias, np.float64)[direction]
    return row[: gates * hidden], row[gates * hidden :]


@register
class LSTM(Recurrent):
    summary = "unrolled product rule on the gates (gates bounded: finite globally; tighter on a domain)"
    gates = 4
    state_inputs = (5, 6)

    def constants(self, node: Node, ctx: RuleContext) -> list[np.ndarray | None]:
        """W, R, B and the peepholes P."""
        directions = len(self.directions(node))
        given = len(node.inputs) > 7 and bool(node.inputs[7])
        peephole = ctx.const_input(node, 7) if given else np.zeros((directions, 3 * node.attr_int("hidden_size")))
        return super().constants(node, ctx) + [peephole]

    def unroll_direction(
        self, node: Node, ctx: RuleContext, direction: int, xs: list[Interval], states: list[Interval]
    ) -> Unrolled:
        w, r, bias, peephole = (np.asarray(c, np.float64) for c in self.constants(node, ctx))
        hidden = node.attr_int("hidden_size")
        w_bias, r_bias = _split_bias(bias, 4, hidden, direction)
        return lstm_direction(
            xs, w[direction], r[direction], w_bias + r_bias, peephole[direction], states[0], states[1]
        )

    def step(
        self, node: Node, args: list[Any], direction: int, x: Any, states: list[Any], alg: Algebra = _RUN
    ) -> list[Any]:
        h, c = states
        w, r = args[1][direction], args[2][direction]
        hidden = node.attr_int("hidden_size")
        bias = args[3][direction] if self._input(args, 3) is not None else x.new_zeros(8 * hidden)
        peephole = args[7][direction] if self._input(args, 7) is not None else x.new_zeros(3 * hidden)
        step = lstm_step(alg, x, h, c, w, r, bias[: 4 * hidden] + bias[4 * hidden :], peephole, hidden)
        return [step.hidden, step.cell]


@register
class GRU(Recurrent):
    summary = "unrolled product rule on the gates (gates bounded: finite globally; tighter on a domain)"
    gates = 3
    state_inputs = (5,)

    def unroll_direction(
        self, node: Node, ctx: RuleContext, direction: int, xs: list[Interval], states: list[Interval]
    ) -> Unrolled:
        w, r, bias = (np.asarray(c, np.float64) for c in self.constants(node, ctx))
        w_bias, r_bias = _split_bias(bias, 3, node.attr_int("hidden_size"), direction)
        return gru_direction(
            xs, w[direction], r[direction], w_bias, r_bias, states[0], bool(node.attr_int("linear_before_reset", 0))
        )

    def step(
        self, node: Node, args: list[Any], direction: int, x: Any, states: list[Any], alg: Algebra = _RUN
    ) -> list[Any]:
        (h,) = states
        w, r = args[1][direction], args[2][direction]
        hidden = node.attr_int("hidden_size")
        bias = args[3][direction] if self._input(args, 3) is not None else x.new_zeros(6 * hidden)
        lbr = bool(node.attr_int("linear_before_reset", 0))
        return [gru_step(alg, x, h, w, r, bias[: 3 * hidden], bias[3 * hidden :], hidden, lbr).hidden]


@register
class RNN(Recurrent):
    summary = "unrolled: the slope of tanh (or ReLU) on each unit's range times the weights"
    gates = 1
    state_inputs = (5,)

    def supported_activations(self, node: Node, activations: list[str]) -> bool:
        # The schema's default lists Tanh twice: a forward RNN reads the first entry only.
        directions = 2 if node.attr_str("direction", "forward") == "bidirectional" else 1
        used = activations[:directions]
        return not used or used in (["tanh"] * directions, ["relu"] * directions)

    def relu(self, node: Node) -> bool:
        return self.activations(node)[:1] == ["relu"]

    def unroll_direction(
        self, node: Node, ctx: RuleContext, direction: int, xs: list[Interval], states: list[Interval]
    ) -> Unrolled:
        w, r, bias = (np.asarray(c, np.float64) for c in self.constants(node, ctx))
        w_bias, r_bias = _split_bias(bias, 1, node.attr_int("hidden_size"), direction)
        return rnn_direction(xs, w[direction], r[direction], w_bias + r_bias, states[0], self.relu(node))

    def step(
        self, node: Node, args: list[Any], direction: int, x: Any, states: list[Any], alg: Algebra = _RUN
    ) -> list[Any]:
        (h,) = states
        w, r = args[1][direction], args[2][direction]
        hidden = node.attr_int("hidden_size")
        bias = args[3][direction] if self._input(args, 3) is not None else x.new_zeros(2 * hidden)
        return [rnn_step(alg, x, h, w, r, bias[:hidden] + bias[hidden:], self.relu(node)).hidden]
