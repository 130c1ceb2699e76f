"""The output size of a window sweep (convolution, pooling) along one axis, ONNX conventions.

Written once here: every rule, executor and norm reads window counts from these two functions.
"""

from __future__ import annotations


def window_count(
    size: int, begin: int, end: int, kernel: int, stride: int = 1, dilation: int = 1, ceil_mode: bool = False
) -> int:
    """How many windows of ``kernel`` taps (``dilation`` apart) fit, ``stride`` apart, in an axis
    of ``size`` padded by ``begin`` and ``end``: ⌊(size + begin + end − span)/stride⌋ + 1, span =
    dilation·(kernel − 1) + 1; 0 when not one fits.  ``ceil_mode`` counts one more partial window,
    unless it would start past the input and the begin padding (torch's and onnxruntime's rule)."""
    room = size + begin + end - (dilation * (kernel - 1) + 1)
    if room < 0:
        return 0
    if not ceil_mode:
        return room // stride + 1
    count = -(-room // stride) + 1
    return count - 1 if (count - 1) * stride >= size + begin else count


def transposed_size(
    size: int, begin: int, end: int, kernel: int, stride: int = 1, dilation: int = 1, output_padding: int = 0
) -> int:
    """The output size of a transposed convolution along one axis (ONNX ConvTranspose, explicit pads)."""
    return (size - 1) * stride - begin - end + dilation * (kernel - 1) + output_padding + 1
