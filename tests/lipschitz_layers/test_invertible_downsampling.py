"""Invertible downsampling (space-to-depth) is a permutation of entries, factor 1, in each form an
exporter or a library writes it: Reshape → Transpose → Reshape (torch's pixel_unshuffle), the
SpaceToDepth op, and a strided convolution whose kernel is a 0/1 permutation (k = s: disjoint
windows, measured from its reshaped kernel alone)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from onnx import helper

from lipaudit import audit
from tests.builders import graph_model, save
from tests.passes._export import export


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_pixel_unshuffle_is_a_permutation(tmp_path: Path, kind: str) -> None:
    path, shapes = export(torch.nn.PixelUnshuffle(2), (1, 3, 6, 4), tmp_path, kind)
    report = audit(str(path), input_shape=shapes)
    assert report.verification.checked, report.verification.reason
    assert report.network.upper_bound == 1.0


def test_space_to_depth_op_is_a_permutation(tmp_path: Path) -> None:
    model = graph_model([helper.make_node("SpaceToDepth", ["x"], ["y"], blocksize=2)], [1, 2, 4, 6], {})
    report = audit(str(save(model, tmp_path)))
    assert report.network.upper_bound == 1.0


def test_a_permutation_kernel_with_stride_equal_to_its_size_is_one(tmp_path: Path) -> None:
    channels, block = 2, 2
    weight = np.zeros((channels * block * block, channels, block, block), np.float32)
    for c in range(channels):
        for i in range(block):
            for j in range(block):
                weight[(c * block + i) * block + j, c, i, j] = 1.0
    conv = helper.make_node("Conv", ["x", "w"], ["y"], kernel_shape=[block, block], strides=[block, block])
    report = audit(str(save(graph_model([conv], [1, channels, 6, 6], {"w": weight}), tmp_path)))
    assert report.verification.checked
    assert report.network.upper_bound == pytest.approx(1.0, abs=1e-5)
    assert report.network.upper_bound >= 1.0
