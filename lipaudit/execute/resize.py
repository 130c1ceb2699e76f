"""Resize / Upsample, nearest and linear: along each axis, the analyzer's own interpolation matrix."""

from __future__ import annotations

import numpy as np
import torch

from ..analyzers.resize import axis_matrix
from ..errors import ExecutionError
from .core import attr, floats, ints, op


@op("Resize", "Upsample")
def _resize(env, node, args):
    x = args[0]
    upsample = node.op_type == "Upsample"
    mode = attr(node, "mode", "nearest")
    mode = "linear" if mode == "bilinear" else mode
    unsupported = (mode not in ("nearest", "linear") or attr(node, "antialias", 0) or attr(node, "axes") is not None
                   or attr(node, "keep_aspect_ratio_policy", "stretch") != "stretch")
    old_form = upsample or env.opset < 11
    coordinates = attr(node, "coordinate_transformation_mode", "asymmetric" if old_form else "half_pixel")
    if unsupported or coordinates == "tf_crop_and_resize":
        raise ExecutionError(f"cannot execute {node.op_type} '{node.name}' in this form (mode '{mode}', "
                             f"coordinates '{coordinates}')", node=node.name, op=node.op_type)
    nearest_mode = attr(node, "nearest_mode", "floor" if old_form else "round_prefer_floor")
    if upsample and "scales" in node.attrs:
        scales, sizes = [float(v) for v in node.attrs["scales"]], None
    else:
        scale_index = 1 if old_form else 2
        scale_arg = args[scale_index] if len(args) > scale_index else None
        scales = floats(scale_arg) if scale_arg is not None and scale_arg.numel() else None
        size_arg = args[3] if not old_form and len(args) > 3 else None
        sizes = ints(size_arg) if size_arg is not None and size_arg.numel() else None
    for axis, in_size in enumerate(x.shape):
        # onnxruntime multiplies in float32: 5 × 1.4f is 7, not 6.9999999.
        out_size = sizes[axis] if sizes else int(np.floor(np.float32(in_size) * np.float32(scales[axis])))
        scale = out_size / in_size if sizes else scales[axis]
        if out_size == in_size and scale == 1.0:
            continue
        matrix = axis_matrix(out_size, in_size, scale, mode, coordinates, nearest_mode)
        if mode == "nearest":
            # One 1 per row: picking those entries is the product, exact for any dtype and for ±inf.
            x = x.index_select(axis, torch.as_tensor(matrix.argmax(axis=1), device=x.device))
        else:
            weights = torch.as_tensor(matrix, dtype=x.dtype, device=x.device)
            x = torch.movedim(torch.movedim(x, axis, -1) @ weights.T, -1, axis)
    return x
