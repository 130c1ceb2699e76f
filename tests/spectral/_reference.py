"""Reference operators built straight from the ONNX definitions, shared by the spectral tests."""

import itertools
import math

import numpy as np
import torch

# ------------------------------------------------------------------ reference operators


def output_size(size, begin, end, kernel, stride, dilation):
    return (size + begin + end - dilation * (kernel - 1) - 1) // stride + 1


def reference_conv_matrix(weight, spatial, strides, pads, dilations, groups):
    """Dense matrix of an ONNX Conv: y[o, j] = Σ_{c,t} W[o, c, t]·x[c, j·s + d·t − pad_begin]."""
    n, kernel = len(spatial), weight.shape[2:]
    c_out, c_in_g = weight.shape[:2]
    c_out_g = c_out // groups
    outs = [output_size(spatial[i], pads[i], pads[n + i], kernel[i], strides[i], dilations[i]) for i in range(n)]
    matrix = np.zeros((c_out, *outs, c_in_g * groups, *spatial))
    for j in itertools.product(*map(range, outs)):
        for t in itertools.product(*map(range, kernel)):
            p = tuple(j[i] * strides[i] + dilations[i] * t[i] - pads[i] for i in range(n))
            if not all(0 <= p[i] < spatial[i] for i in range(n)):
                continue  # the tap reads padding
            for g in range(groups):
                rows, cols = slice(g * c_out_g, (g + 1) * c_out_g), slice(g * c_in_g, (g + 1) * c_in_g)
                matrix[(rows, *j, cols, *p)] += weight[(rows, slice(None), *t)]
    return matrix.reshape(c_out * math.prod(outs), -1)


def reference_conv_transpose_matrix(weight, spatial, strides, pads, dilations, groups, output_padding):
    """Dense matrix of an ONNX ConvTranspose: the adjoint of the unpadded conv at the full size,
    with pad_begin outputs dropped at the start, pad_end at the end and output_padding added at the end."""
    n, kernel = len(spatial), weight.shape[2:]
    full = [strides[i] * (spatial[i] - 1) + dilations[i] * (kernel[i] - 1) + 1 for i in range(n)]
    adjoint = reference_conv_matrix(weight, full, strides, (0,) * (2 * n), dilations, groups).T
    channels_out = weight.shape[1] * groups
    adjoint = adjoint.reshape(channels_out, *full, -1)
    outs = [full[i] - pads[i] - pads[n + i] + output_padding[i] for i in range(n)]
    matrix = np.zeros((channels_out, *outs, adjoint.shape[-1]))
    for q in itertools.product(*map(range, outs)):
        source = tuple(q[i] + pads[i] for i in range(n))
        if all(source[i] < full[i] for i in range(n)):
            matrix[(slice(None), *q)] = adjoint[(slice(None), *source)]
    return matrix.reshape(channels_out * math.prod(outs), -1)


def reference_avgpool_matrix(kernel, spatial, strides, pads, count_include_pad, ceil_mode, dilations=None):
    """One channel of AveragePool, torch/onnxruntime semantics (checked against both below)."""
    n = len(kernel)
    dilations = dilations or (1,) * n
    outs = []
    for i in range(n):
        room = spatial[i] + pads[i] + pads[n + i] - dilations[i] * (kernel[i] - 1) - 1
        out = (-(-room // strides[i]) if ceil_mode else room // strides[i]) + 1
        if ceil_mode and (out - 1) * strides[i] >= spatial[i] + pads[i]:
            out -= 1
        outs.append(out)
    matrix = np.zeros((*outs, *spatial))
    for j in itertools.product(*map(range, outs)):
        cells = [[j[i] * strides[i] + dilations[i] * t - pads[i] for t in range(kernel[i])] for i in range(n)]
        counted = [
            sum(1 for p in cells[i] if (p < spatial[i] + pads[n + i] if count_include_pad else 0 <= p < spatial[i]))
            for i in range(n)
        ]
        for p in itertools.product(*cells):
            if all(0 <= p[i] < spatial[i] for i in range(n)):
                matrix[(*j, *p)] += 1.0 / math.prod(counted)
    return matrix.reshape(math.prod(outs), -1)


def norm_of(matrix):
    return float(np.linalg.svd(matrix, compute_uv=False)[0])


# (name, weight shape, input spatial, strides, pads, dilations, groups, transposed, output_padding)
CASES = [
    ("1d", (3, 2, 3), (9,), (1,), (1, 1), (1,), 1, False, None),
    ("1d-stride3-asym", (2, 3, 4), (11,), (3,), (2, 0), (1,), 1, False, None),
    ("1d-dilated-groups", (4, 2, 3), (10,), (2,), (0, 3), (2,), 2, False, None),
    ("2d-same", (4, 3, 3, 3), (6, 5), (1, 1), (1, 1, 1, 1), (1, 1), 1, False, None),
    ("2d-stride2-asym", (3, 2, 3, 2), (7, 6), (2, 1), (0, 1, 2, 0), (1, 2), 1, False, None),
    ("2d-groups2", (4, 2, 3, 3), (5, 6), (1, 2), (1, 0, 1, 1), (2, 1), 2, False, None),
    ("2d-depthwise", (6, 1, 3, 3), (6, 6), (2, 2), (1, 1, 1, 1), (1, 1), 3, False, None),
    ("2d-stride3-dil2", (2, 2, 2, 3), (8, 7), (3, 3), (1, 2, 0, 1), (2, 2), 1, False, None),
    ("3d", (2, 2, 2, 3, 2), (4, 3, 5), (1, 2, 1), (1, 0, 0, 0, 1, 1), (1, 1, 2), 1, False, None),
    ("3d-stride2-groups", (4, 1, 2, 2, 2), (4, 4, 3), (2, 2, 1), (0,) * 6, (1, 1, 1), 2, False, None),
    ("1d-T", (3, 2, 3), (6,), (2,), (1, 0), (1,), 1, True, (1,)),
    ("1d-T-stride3-dil2", (2, 2, 3), (5,), (3,), (2, 1), (2,), 1, True, (2,)),
    ("2d-T-asym-outpad", (2, 3, 3, 2), (4, 3), (2, 3), (0, 1, 2, 0), (1, 2), 1, True, (1, 2)),
    ("2d-T-groups", (4, 1, 3, 3), (3, 4), (2, 1), (1, 1, 1, 1), (1, 1), 2, True, (1, 0)),
    ("3d-T", (2, 2, 2, 2, 3), (3, 2, 3), (2, 1, 2), (0, 0, 1, 1, 0, 0), (1, 2, 1), 1, True, (1, 0, 1)),
]


def build(case, seed=0):
    name, shape, spatial, strides, pads, dilations, groups, transposed, output_padding = case
    weight = np.random.default_rng(seed).standard_normal(shape)
    kwargs = dict(
        strides=strides,
        pads=pads,
        dilations=dilations,
        groups=groups,
        transposed=transposed,
        output_padding=output_padding,
    )
    if transposed:
        truth = reference_conv_transpose_matrix(weight, spatial, strides, pads, dilations, groups, output_padding)
    else:
        truth = reference_conv_matrix(weight, spatial, strides, pads, dilations, groups)
    return weight, spatial, kwargs, truth


def jacobian(forward, input_shape):
    """The operator's matrix from autograd, for checking the reference matrices themselves."""
    zero = torch.zeros(input_shape, dtype=torch.float64)
    matrix = torch.autograd.functional.jacobian(lambda x: forward(x[None])[0], zero)
    return matrix.reshape(-1, math.prod(input_shape)).numpy()
