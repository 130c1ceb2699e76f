"""Convolutions and average pooling as typed linear maps (ONNX layout, explicit pads)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor

from ..spectral import avgpool_norm, conv_norm
from ..spectral.conv import avgpool_layout
from ..spectral.geometry import transposed_size, window_count
from .base import Linear, Shape, f64, torch_pad

CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


def conv_cost(kernel_shape: Sequence[int], stride: Sequence[int], spatial: Sequence[int]) -> float:
    """Rough work of a certified convolution norm: frequency blocks × the Gram side² × the long
    side (a 1×1 kernel, or a stride past the kernel, is one block)."""
    blocks = 1
    for k, s, size in zip(kernel_shape[2:], stride, spatial):
        if k > s:
            blocks *= max(1, size // s)
    rows, cols = kernel_shape[0], kernel_shape[1] * math.prod(stride)
    return float(blocks) * rows * cols * min(rows, cols)


@dataclass(eq=False)
class Conv(Linear):
    """ONNX Conv (weight (C_out, C_in/groups, *k)) or ConvTranspose (weight (C_in, C_out/groups,
    *k)) on an (N, C_in, *spatial) value; pads (begin_1.., end_1..)."""

    weight: Tensor
    spatial: Shape  # the input's spatial size: the norm is taken at it
    strides: Shape
    pads: Shape
    dilations: Shape
    groups: int = 1
    transposed: bool = False
    output_padding: Shape | None = None

    @classmethod
    def of(
        cls, weight, spatial, strides=None, pads=None, dilations=None, groups=1, transposed=False, output_padding=None
    ):
        w = f64(weight)
        d = w.ndim - 2
        if d not in (1, 2, 3):
            raise ValueError(f"convolution weight must have 3 to 5 axes, got {tuple(w.shape)}")
        if len(spatial) != d:
            raise ValueError(f"convolution with a {d}-d kernel reads a value with spatial size {tuple(spatial)}")
        return cls(
            w,
            tuple(int(s) for s in spatial),
            tuple(int(s) for s in (strides or (1,) * d)),
            tuple(int(p) for p in (pads or (0,) * (2 * d))),
            tuple(int(s) for s in (dilations or (1,) * d)),
            int(groups),
            bool(transposed),
            tuple(int(p) for p in output_padding) if output_padding else None,
        )

    @property
    def dims(self) -> int:
        return self.weight.ndim - 2

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        shape = shapes[0]
        d = self.dims
        begins, ends = self.pads[:d], self.pads[d:]
        extra = self.output_padding or (0,) * d
        spatial = []
        for i, n in enumerate(shape[2:]):
            k, s, dil = int(self.weight.shape[2 + i]), self.strides[i], self.dilations[i]
            if self.transposed:
                spatial.append(transposed_size(n, begins[i], ends[i], k, s, dil, extra[i]))
            else:
                spatial.append(window_count(n, begins[i], ends[i], k, s, dil))
        if min(spatial, default=1) < 1:
            raise ValueError(f"convolution of a {shape} value has an empty output {spatial}")
        channels = int(self.weight.shape[1]) * self.groups if self.transposed else int(self.weight.shape[0])
        return (shape[0], channels, *spatial)

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        batch, n = x.shape[0], x.shape[1]
        w = self.weight.to(dtype=x.dtype, device=x.device)
        d = self.dims
        x = x.reshape(batch * n, *x.shape[2:])
        begins, ends = self.pads[:d], self.pads[d:]
        if not self.transposed:
            padded = F.pad(x, torch_pad(begins, ends))
            y = CONV[d](padded, w, stride=self.strides, dilation=self.dilations, groups=self.groups)
        else:
            full = CONV_TRANSPOSE[d](x, w, stride=self.strides, dilation=self.dilations, groups=self.groups)
            extra = self.output_padding or (0,) * d
            y = F.pad(full, torch_pad([-b for b in begins], [q - e for q, e in zip(extra, ends)]))
        return y.reshape(batch, n, *y.shape[1:])

    def norm(self) -> float:
        return conv_norm(
            self.weight,
            self.spatial,
            strides=self.strides,
            pads=self.pads,
            dilations=self.dilations,
            groups=self.groups,
            transposed=self.transposed,
            output_padding=self.output_padding,
            power_iterations=0,
        ).value

    def cost(self) -> float:
        shape = tuple(self.weight.shape)
        per_group = (shape[0] // self.groups, *shape[1:])
        return self.groups * conv_cost(per_group, self.strides, self.spatial)

    def conv_form(self, shape: Shape):
        if self.transposed:
            return None
        return self.weight, self.strides, self.pads, self.dilations, self.groups

    def absolute(self) -> Conv:
        return dataclasses.replace(self, weight=self.weight.abs())

    def terms(self) -> int:
        per_output = self.weight.shape[0] // self.groups if self.transposed else self.weight.shape[1]
        return int(per_output) * math.prod(int(k) for k in self.weight.shape[2:])


@dataclass(eq=False)
class AvgPool(Linear):
    """ONNX AveragePool (no dilation) on an (N, C, *spatial) value: window sums over the
    zero-padded input divided by the number of counted cells (all of the window with
    count_include_pad, else the real inputs); ceil_mode windows cut at the padded input's end."""

    kernel: Shape
    spatial: Shape
    strides: Shape
    pads: Shape
    count_include_pad: bool = False
    ceil_mode: bool = False
    out: Shape = field(init=False)
    ends_extended: Shape = field(init=False)
    divisors: Tensor = field(init=False, repr=False)
    uniform: bool = field(init=False)  # every window has the full divisor: a depthwise convolution
    _depthwise: dict = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def of(cls, kernel, spatial, strides=None, pads=None, count_include_pad=False, ceil_mode=False):
        kernel = tuple(int(k) for k in kernel)
        d = len(kernel)
        return cls(
            kernel,
            tuple(int(s) for s in spatial),
            tuple(int(s) for s in (strides or (1,) * d)),
            tuple(int(p) for p in (pads or (0,) * (2 * d))),
            bool(count_include_pad),
            bool(ceil_mode),
        )

    def __post_init__(self) -> None:
        d = len(self.kernel)
        outs, ends, sums = avgpool_layout(
            self.kernel, self.spatial, self.strides, self.pads, (1,) * d, self.count_include_pad, self.ceil_mode
        )
        self.out, self.ends_extended = tuple(outs), tuple(ends)
        self.divisors = sums.clamp(min=1.0)[0, 0]
        self.uniform = bool((sums == math.prod(self.kernel)).all())

    def out_shape(self, shapes: Sequence[Shape]) -> Shape:
        return tuple(shapes[0][:2]) + self.out

    def forward(self, *xs: Tensor) -> Tensor:
        x = xs[0]
        batch, n, c = x.shape[:3]
        d = len(self.kernel)
        padded = F.pad(x.reshape(batch * n * c, 1, *x.shape[3:]), torch_pad(self.pads[:d], self.ends_extended))
        ones = torch.ones((1, 1, *self.kernel), dtype=x.dtype, device=x.device)
        sums = CONV[d](padded, ones, stride=self.strides)
        sums = sums[(slice(None), slice(None), *(slice(0, o) for o in self.out))]
        divisors = self.divisors.to(dtype=x.dtype, device=x.device)
        return (sums / divisors).reshape(batch, n, c, *self.out)

    def norm(self) -> float:
        return avgpool_norm(
            self.kernel,
            self.spatial,
            strides=self.strides,
            pads=self.pads,
            count_include_pad=self.count_include_pad,
            channels=1,
            ceil_mode=self.ceil_mode,
            power_iterations=0,
        ).value

    def terms(self) -> int:
        return math.prod(self.kernel) + 1  # the window's sum, then the division

    def conv_form(self, shape: Shape):
        if not self.uniform:
            return None
        channels = shape[1]
        return self.depthwise_kernel(channels), self.strides, self.pads, (1,) * len(self.kernel), channels

    def depthwise_kernel(self, channels: int) -> Tensor:
        """The uniform pool as a depthwise kernel, kept with the map: ConvMap caches facts by the
        weight's id."""
        if channels not in self._depthwise:
            self._depthwise[channels] = torch.full(
                (channels, 1, *self.kernel), 1.0 / math.prod(self.kernel), dtype=torch.float64
            )
        return self._depthwise[channels]
