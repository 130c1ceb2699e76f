"""Every aten converter is right without verification: the IR it emits, run by lipaudit's own
executor on a fresh input, equals the torch module's output (issue 18), for every attribute the
op allows that the converter accepts."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from lipaudit import audit
from lipaudit.execute.executor import execute
from lipaudit.load import load_model


class Lambda(nn.Module):
    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _interpolate(**kwargs):
    return lambda x: F.interpolate(x, **kwargs)


_CONST = torch.linspace(-1, 1, 12).reshape(1, 3, 4)
_PICKS = torch.tensor([[[0, 3, 3, 1], [2, 2, 2, 2], [3, 0, 1, 2]]])
_ROWS = torch.tensor([2, 0, 0])
_COLUMNS = torch.tensor([3, 1, 3])

CASES: dict[str, tuple[nn.Module, tuple[int, ...]]] = {
    "flip": (Lambda(lambda x: torch.flip(x, [1, -1]) - x), (1, 3, 4)),
    "rsub_alpha_tensor": (Lambda(lambda x: torch.rsub(x, _CONST, alpha=2.5)), (1, 3, 4)),
    "rsub_alpha_scalar": (Lambda(lambda x: torch.rsub(x, 0.75, alpha=-3.0)), (1, 3, 4)),
    "sub_alpha": (Lambda(lambda x: torch.sub(x, x * x, alpha=0.5)), (1, 3, 4)),
    "add_alpha": (Lambda(lambda x: torch.add(_CONST, x, alpha=4.0)), (1, 3, 4)),
    "nearest_scale_1_5": (Lambda(_interpolate(scale_factor=1.5, mode="nearest")), (1, 2, 5, 6)),
    "nearest_scale_0_6": (Lambda(_interpolate(scale_factor=0.6, mode="nearest")), (1, 2, 5, 6)),
    "nearest_size": (Lambda(_interpolate(size=(7, 9), mode="nearest")), (1, 2, 5, 6)),
    "nearest_exact_scale": (Lambda(_interpolate(scale_factor=2.3, mode="nearest-exact")), (1, 2, 5, 6)),
    "bilinear_scale": (Lambda(_interpolate(scale_factor=1.7, mode="bilinear")), (1, 2, 5, 6)),
    "bilinear_scale_pair": (Lambda(_interpolate(scale_factor=(1.5, 2.5), mode="bilinear")), (1, 2, 5, 6)),
    "bilinear_size": (Lambda(_interpolate(size=(8, 11), mode="bilinear")), (1, 2, 5, 6)),
    "bilinear_corners": (Lambda(_interpolate(scale_factor=1.7, mode="bilinear", align_corners=True)), (1, 2, 5, 6)),
    "bilinear_recompute": (
        Lambda(_interpolate(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True)),
        (1, 2, 5, 6),
    ),
    "linear_1d_scale": (Lambda(_interpolate(scale_factor=2.5, mode="linear")), (1, 2, 6)),
    "nearest_1d_scale": (Lambda(_interpolate(scale_factor=1.5, mode="nearest")), (1, 2, 6)),
    "trilinear_scale": (Lambda(_interpolate(scale_factor=1.5, mode="trilinear")), (1, 1, 3, 4, 5)),
    "bicubic_scale": (Lambda(_interpolate(scale_factor=1.7, mode="bicubic")), (1, 2, 5, 6)),
    "bicubic_size": (Lambda(_interpolate(size=(3, 11), mode="bicubic")), (1, 2, 5, 6)),
    "bicubic_corners": (Lambda(_interpolate(scale_factor=2, mode="bicubic", align_corners=True)), (1, 2, 5, 6)),
    "sdpa": (Lambda(lambda x: F.scaled_dot_product_attention(x, x * 0.5, torch.tanh(x))), (1, 2, 5, 4)),
    "sdpa_causal_scale": (
        Lambda(lambda x: F.scaled_dot_product_attention(x, -x, x, is_causal=True, scale=0.3)),
        (1, 2, 5, 4),
    ),
    "sdpa_bool_mask": (
        Lambda(
            lambda x: F.scaled_dot_product_attention(
                x, x, x, attn_mask=torch.tensor([[True, False, True, True, False]] * 5)
            )
        ),
        (1, 2, 5, 4),
    ),
    "sdpa_float_mask": (
        Lambda(lambda x: F.scaled_dot_product_attention(x, x, x, attn_mask=torch.linspace(-2, 2, 25).reshape(5, 5))),
        (1, 2, 5, 4),
    ),
    "sdpa_3d": (Lambda(lambda x: F.scaled_dot_product_attention(x, x * 0.5, torch.tanh(x))), (2, 5, 4)),
    "sdpa_3d_causal_mask": (
        Lambda(
            lambda x: F.scaled_dot_product_attention(
                x, -x, x, is_causal=False, attn_mask=torch.linspace(-2, 2, 50).reshape(2, 5, 5), scale=0.4
            )
        ),
        (2, 5, 4),
    ),
    "sdpa_3d_causal": (Lambda(lambda x: F.scaled_dot_product_attention(x, x, x, is_causal=True)), (2, 5, 4)),
    "where_gt": (Lambda(lambda x: torch.where(x > 0.1, x, 0.2 * x)), (1, 3, 4)),
    "where_comparisons": (
        Lambda(lambda x: torch.where(x <= 0.5, x, -x) + (x >= -0.3).float() + torch.where(x != 0.25, x, 1.0)),
        (1, 3, 4),
    ),
    "masked_fill_constant_mask": (
        Lambda(lambda x: x.masked_fill(torch.tensor([True, False, True, False]), 0.5)),
        (1, 3, 4),
    ),
    "masked_fill_data_mask": (Lambda(lambda x: x.masked_fill(x < 0, -1.5)), (1, 3, 4)),
    "conv1d_same_dilated": (nn.Conv1d(2, 4, 3, padding="same", dilation=2), (1, 2, 9)),
    "conv2d_grouped_strided": (nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), (1, 4, 7, 7)),
    "conv2d_reflect": (nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect"), (1, 2, 5, 5)),
    "conv2d_circular": (nn.Conv2d(2, 3, 3, padding=1, padding_mode="circular"), (1, 2, 5, 5)),
    "conv_transpose_output_padding": (nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1), (1, 2, 4, 4)),
    "max_pool_ceil_dilated": (nn.MaxPool2d(3, stride=2, padding=1, dilation=2, ceil_mode=True), (1, 2, 9, 9)),
    "avg_pool_exclude_pad_ceil": (
        nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
        (1, 2, 6, 6),
    ),
    "adaptive_avg_pool": (nn.AdaptiveAvgPool2d(2), (1, 2, 6, 4)),
    "adaptive_max_pool": (nn.AdaptiveMaxPool1d(3), (1, 2, 9)),
    "pad_constant": (Lambda(lambda x: F.pad(x, (1, 2, 0, 1), value=0.5)), (1, 2, 3, 4)),
    "pad_replicate": (Lambda(lambda x: F.pad(x, (2, 1, 1, 0), mode="replicate")), (1, 2, 3, 4)),
    "pixel_shuffle": (nn.PixelShuffle(2), (1, 8, 2, 3)),
    "pixel_unshuffle": (nn.PixelUnshuffle(2), (1, 2, 4, 6)),
    "softplus_beta": (nn.Softplus(beta=2.0, threshold=20.0), (1, 3, 4)),
    "elu_celu_selu": (Lambda(lambda x: F.elu(x, 0.7) + F.celu(x, 1.3) + F.selu(x)), (1, 3, 4)),
    "clamps": (Lambda(lambda x: F.hardtanh(x, -0.5, 0.7) + x.clamp(min=-0.2) + F.relu6(3 * x)), (1, 3, 4)),
    "leaky_gelu_tanh": (Lambda(lambda x: F.leaky_relu(x, 0.3) + F.gelu(x, approximate="tanh")), (1, 3, 4)),
    "prelu": (nn.PReLU(3, init=0.2), (1, 3, 4)),
    "sort_descending": (Lambda(lambda x: torch.sort(x, dim=1, descending=True).values), (1, 3, 4)),
    "topk_smallest": (Lambda(lambda x: torch.topk(x, 2, dim=-1, largest=False).values), (1, 3, 4)),
    "reductions": (
        Lambda(lambda x: x.mean(dim=(1, 2), keepdim=True) + x.sum(-1, keepdim=True) + x.amax(1, keepdim=True)),
        (1, 3, 4),
    ),
    "log_softmax": (nn.LogSoftmax(dim=1), (1, 3, 4)),
    "narrow_negative_start": (
        Lambda(lambda x: torch.cat([torch.narrow(x, -1, -2, 2), torch.narrow(x, 1, -3, 1).transpose(1, 2)[:, :3]], -1)),
        (1, 3, 4),
    ),
    "moving_entries": (
        Lambda(
            lambda x: torch.cat(
                [
                    x[:, :, ::2],
                    x.narrow(2, 1, 2),
                    torch.stack(x.unbind(1), dim=1)[..., :2],
                    x.transpose(1, 2).reshape(1, 3, 4),
                ],
                dim=2,
            )
        ),
        (1, 3, 4),
    ),
    "expand_repeat": (Lambda(lambda x: x[:, :1].expand(1, 3, 4) + x.repeat(1, 1, 2)[..., :4]), (1, 3, 4)),
    "rms_norm": (nn.RMSNorm(6, eps=1e-3), (1, 3, 6)),
    "rms_norm_default_eps": (nn.RMSNorm([3, 6], elementwise_affine=False), (1, 3, 6)),
    "glu": (Lambda(lambda x: F.glu(x, -1) + F.glu(x[:, :2], 1)[..., :2]), (1, 3, 4)),
    "logsumexp": (Lambda(lambda x: torch.logsumexp(x, 1) + torch.logsumexp(x, (1, 2), keepdim=True)[0]), (1, 3, 4)),
    "vector_norms": (
        Lambda(lambda x: torch.linalg.vector_norm(x, dim=-1) + x.norm(dim=-1) + F.normalize(x, dim=1).sum(-1)),
        (1, 3, 4),
    ),
    "cumsum": (Lambda(lambda x: torch.cumsum(x, 1) + torch.cumsum(x, -1) * 0.5), (1, 3, 4)),
    "einsum": (
        Lambda(lambda x: torch.einsum("bij,jk->bik", x, _CONST[0].T) + torch.einsum("...j->...", x)[..., None]),
        (1, 3, 4),
    ),
    "gather": (Lambda(lambda x: torch.gather(x, 2, _PICKS) + torch.gather(x, 1, _PICKS[:, :2] % 3).sum()), (1, 3, 4)),
    "index_tensor": (Lambda(lambda x: torch.cat([x[:, _ROWS], x[..., _COLUMNS]], 2)), (1, 3, 4)),
    "roll": (Lambda(lambda x: torch.roll(x, (1, -3), (1, 2)) + torch.roll(x, 6, -1)), (1, 3, 4)),
    "unfold": (Lambda(lambda x: F.unfold(x, (2, 3), dilation=(1, 2), padding=1, stride=(2, 1))), (1, 2, 5, 6)),
    "tile_repeat_interleave": (
        Lambda(lambda x: torch.tile(x, (2,))[..., 3:7] + torch.repeat_interleave(x, 2, dim=-1)[..., ::2]),
        (1, 3, 4),
    ),
    "repeat_interleave_counts": (
        Lambda(lambda x: torch.repeat_interleave(x, torch.tensor([1, 0, 2]), dim=1)),
        (1, 3, 4),
    ),
    "diff": (Lambda(lambda x: torch.diff(x, dim=-1) + torch.diff(x, n=2, dim=1, prepend=x[:, :2])[..., :3]), (1, 3, 4)),
    "threshold": (Lambda(lambda x: F.threshold(x, 0.3, 0.3) + F.threshold(x, 0.0, -1.0)), (1, 3, 4)),
    "variance": (
        Lambda(lambda x: x.var(dim=1, keepdim=True) + x.std(-1, correction=0)[..., None] + x.var()),
        (1, 3, 4),
    ),
    "baddbmm": (
        Lambda(lambda x: torch.baddbmm(_CONST[..., :3], x, _CONST.transpose(1, 2), beta=0.5, alpha=2.0)),
        (1, 3, 4),
    ),
    "channel_shuffle": (nn.ChannelShuffle(2), (1, 4, 2, 3)),
    "diagonal": (Lambda(lambda x: x + torch.diagonal(x, 1, 1, 2)[:, None, :1]), (1, 3, 4)),
    "fold": (Lambda(lambda x: F.fold(x, (4, 5), (2, 3), dilation=(1, 2), padding=(1, 0), stride=(2, 1))), (1, 12, 3)),
    "avg_pool_divisor": (nn.AvgPool2d(2, stride=1, padding=1, divisor_override=3), (1, 2, 4, 4)),
    "adaptive_avg_pool_unequal": (nn.AdaptiveAvgPool2d((3, 4)), (1, 2, 5, 7)),
    "adaptive_avg_pool_unequal_1d": (nn.AdaptiveAvgPool1d(4), (1, 2, 7)),
    "adaptive_avg_pool_unequal_3d": (nn.AdaptiveAvgPool3d((2, 3, 2)), (1, 2, 5, 4, 4)),
}


def _recurrent(cell: type[nn.Module], **kwargs) -> nn.Module:
    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = cell(4, 5, **kwargs)

        def forward(self, x):
            out, state = self.rnn(x)
            states = state if isinstance(state, tuple) else (state,)
            return (out, *states)

    return Wrapped()


RECURRENT = {
    "lstm": (_recurrent(nn.LSTM), (3, 2, 4)),
    "lstm_batch_first_bidirectional_2_layers": (
        _recurrent(nn.LSTM, batch_first=True, bidirectional=True, num_layers=2),
        (2, 3, 4),
    ),
    "lstm_no_bias": (_recurrent(nn.LSTM, bias=False), (3, 1, 4)),
    "gru": (_recurrent(nn.GRU, batch_first=True), (2, 3, 4)),
    "gru_bidirectional_2_layers": (_recurrent(nn.GRU, bidirectional=True, num_layers=2), (3, 2, 4)),
    "rnn_tanh": (_recurrent(nn.RNN), (3, 2, 4)),
    "rnn_relu_batch_first_bidirectional_2_layers": (
        _recurrent(nn.RNN, nonlinearity="relu", batch_first=True, bidirectional=True, num_layers=2),
        (2, 3, 4),
    ),
}


def _save(kind: str, model: nn.Module, shape: tuple[int, ...], path: Path, dtype: torch.dtype = torch.float32) -> Path:
    torch.manual_seed(0)
    example = torch.randn(shape, dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if kind == "traced":
            torch.jit.save(torch.jit.trace(model, example), str(path))
        else:
            torch.export.save(torch.export.export(model, (example,)), str(path))
    return path


def _check_runs_like_torch(model: nn.Module, shape: tuple[int, ...], kind: str, tmp_path: Path) -> None:
    model.eval()
    path = _save(kind, model, shape, tmp_path / ("m.pt" if kind == "traced" else "m.pt2"))
    graph = load_model(path).graph
    unsupported = [node.op_type for node in graph.nodes if "::" in node.op_type]
    assert not unsupported, unsupported
    x = torch.randn(shape, generator=torch.Generator().manual_seed(7))
    outputs = execute(graph, {graph.inputs[0]: x.numpy()})
    with torch.no_grad():
        expected = model(x)
    expected = expected if isinstance(expected, tuple) else (expected,)
    for name, truth in zip(graph.outputs, expected):
        np.testing.assert_allclose(outputs[name].numpy(), truth.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["traced", "export"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_converter_matches_torch(case: str, kind: str, tmp_path: Path) -> None:
    model, shape = CASES[case]
    _check_runs_like_torch(model, shape, kind, tmp_path)


@pytest.mark.parametrize("kind", ["traced", "export"])
@pytest.mark.parametrize("case", sorted(RECURRENT))
def test_recurrent_converter_matches_torch(case: str, kind: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model, shape = RECURRENT[case]
    _check_runs_like_torch(model, shape, kind, tmp_path)


def test_rsub_alpha_figure_without_verification(tmp_path: Path) -> None:
    """rsub(x, c, alpha) = c − alpha·x: slope |alpha|, certified with verification off."""
    model, shape = CASES["rsub_alpha_scalar"]
    report = audit(str(_save("traced", model, shape, tmp_path / "m.pt")), verify=False)
    assert report.upper_bound == pytest.approx(3.0, rel=1e-5)


def test_multi_head_attention_fast_path_traced_without_grad(tmp_path: Path) -> None:
    """Traced under no_grad, nn.MultiheadAttention records aten::_native_multi_head_attention."""
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    model = Lambda(lambda x: mha(x, x, x, need_weights=False)[0])
    model.mha = mha
    example = torch.randn(1, 5, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(model, example, check_trace=False)
    assert "_native_multi_head_attention" in str(traced.inlined_graph)
    torch.jit.save(traced, str(tmp_path / "m.pt"))
    graph = load_model(tmp_path / "m.pt").graph
    assert not [node.op_type for node in graph.nodes if "::" in node.op_type]
    x = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model(x)
    np.testing.assert_allclose(
        execute(graph, {graph.inputs[0]: x.numpy()})[graph.outputs[0]].numpy(), expected.numpy(), rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_fast_path_traced_without_grad(tmp_path: Path, norm_first: bool, activation: str) -> None:
    """Traced under no_grad, nn.TransformerEncoderLayer records aten::_transformer_encoder_layer_fwd."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(
        8, 2, 16, dropout=0.0, batch_first=True, norm_first=norm_first, activation=activation
    ).eval()
    example = torch.randn(1, 5, 8)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(layer, example, check_trace=False)
    assert "_transformer_encoder_layer_fwd" in str(traced.inlined_graph)
    torch.jit.save(traced, str(tmp_path / "m.pt"))
    graph = load_model(tmp_path / "m.pt").graph
    assert not [node.op_type for node in graph.nodes if "::" in node.op_type]
    x = torch.randn(1, 5, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = layer(x)
    outputs = execute(graph, {graph.inputs[0]: x.numpy()})
    np.testing.assert_allclose(outputs[graph.outputs[0]].numpy(), expected.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_a_float64_alpha_below_float32s_range_is_kept(tmp_path: Path, kind: str) -> None:
    """addmm's alpha went into a Gemm attribute, float32: 1e-200 became 0 and, without verification,
    the figure 0 (redteam7). Spelled out, the constant keeps the model's float type."""
    weight = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    model = Lambda(lambda x: torch.addmm(torch.zeros(2, dtype=torch.float64), x, weight, alpha=1e-200) * 1e200)
    path = _save(kind, model, (1, 3), tmp_path / ("m.pt" if kind == "traced" else "m.pt2"), dtype=torch.float64)
    truth = float(torch.linalg.matrix_norm(weight, ord=2))
    for verify in (True, False):
        report = audit(str(path), verify=verify)
        assert report.upper_bound is not None and truth <= report.upper_bound <= truth * (1 + 1e-5)


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_float64_softplus_is_the_step_the_dynamo_exporter_writes(tmp_path: Path, kind: str) -> None:
    """In float64 the default threshold cut jumps by 2e-9, 10⁷ float64 steps at x = 20: a step, as
    on the ONNX paths (it was certified 1.0); in float32 it is rounding, and the op is Softplus."""
    model = nn.Sequential(nn.Linear(3, 4), nn.Softplus()).double()
    path = _save(kind, model, (1, 3), tmp_path / ("m.pt" if kind == "traced" else "m.pt2"), dtype=torch.float64)
    report = audit(str(path))
    assert report.exit_code() == 3 and report.upper_bound is None
    assert {"Greater", "Where"} <= {bound.op for bound in report.network.unbounded}
    single = _save(kind, model.float(), (1, 3), tmp_path / ("s.pt" if kind == "traced" else "s.pt2"))
    assert audit(str(single)).exit_code() == 0


@pytest.mark.parametrize("kind", ["traced", "export"])
def test_tril_is_the_trilu_the_onnx_exporters_write(tmp_path: Path, kind: str) -> None:
    """tril/triu become Trilu as in the ONNX exports, and Trilu a product with its 0/1 mask: here the
    two masks keep disjoint entries, so the sum keeps each entry at most once (the exact norm, 1)."""
    model = Lambda(lambda x: torch.tril(x, -1) + torch.triu(x, 2))
    report = audit(str(_save(kind, model, (1, 3, 4), tmp_path / ("m.pt" if kind == "traced" else "m.pt2"))))
    assert report.exit_code() == 0 and report.network.certified
    assert 1.0 <= report.upper_bound <= 1.0 + 1e-5
