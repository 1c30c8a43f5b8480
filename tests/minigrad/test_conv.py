"""Convolution, pooling, resampling, normalisation and their layers against torch 2.13 (float32)
and through float64 gradcheck on hypothesis-drawn geometries; layers' state_dicts cross over."""
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, strategies as st

import minigrad as mg
from minigrad import Tensor, nn
from minigrad.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the helpers' files, in tests/ or here
from test_ops_gradcheck import SETTINGS, check, param  # noqa: E402
from test_ops_torch import helper_test_op, helper_test_raises  # noqa: E402


def libF(x):
    return F if isinstance(x, Tensor) else TF


def stats(x):  # fresh running statistics for each library
    return (np.zeros(x.shape[1], np.float32), np.ones(x.shape[1], np.float32)) if isinstance(x, Tensor) else \
        (torch.zeros(x.shape[1]), torch.ones(x.shape[1]))


OPS = [
    ("conv2d", [(2, 3, 7, 6), (4, 3, 3, 3), (4,)], lambda x, w, b: libF(x).conv2d(x, w, b)),
    ("conv2d_stride_pad", [(2, 3, 7, 6), (4, 3, 3, 2)], lambda x, w: libF(x).conv2d(x, w, stride=2, padding=1)),
    ("conv2d_pairs", [(1, 2, 8, 7), (3, 2, 2, 3)], lambda x, w: libF(x).conv2d(x, w, stride=(1, 2), padding=(2, 0),
                                                                          dilation=(2, 1))),
    ("conv2d_groups", [(2, 4, 6, 6), (6, 2, 3, 3), (6,)], lambda x, w, b: libF(x).conv2d(x, w, b, padding=1, groups=2)),
    ("conv2d_depthwise", [(2, 3, 5, 5), (3, 1, 3, 3)], lambda x, w: libF(x).conv2d(x, w, groups=3)),
    ("conv2d_same", [(1, 2, 6, 5), (3, 2, 4, 3)], lambda x, w: libF(x).conv2d(x, w, padding="same", dilation=2)),
    ("conv2d_valid_1x1", [(2, 3, 4, 4), (5, 3, 1, 1)], lambda x, w: libF(x).conv2d(x, w, padding="valid")),
    ("conv1d", [(2, 3, 9), (4, 3, 3), (4,)], lambda x, w, b: libF(x).conv1d(x, w, b, stride=2, padding=1)),
    ("conv1d_groups_dilation", [(2, 4, 9), (2, 2, 2)], lambda x, w: libF(x).conv1d(x, w, dilation=3, groups=2)),
    ("conv_transpose2d", [(2, 3, 4, 5), (3, 2, 3, 3), (2,)], lambda x, w, b: libF(x).conv_transpose2d(x, w, b)),
    ("conv_transpose2d_stride", [(2, 4, 3, 4), (4, 3, 3, 2)], lambda x, w: libF(x).conv_transpose2d(
        x, w, stride=2, padding=1, output_padding=1, groups=2)),
    ("conv_transpose2d_dilation", [(1, 2, 4, 4), (2, 3, 2, 2)], lambda x, w: libF(x).conv_transpose2d(
        x, w, stride=(2, 3), padding=(0, 1), dilation=2)),
    ("max_pool2d", [(2, 3, 6, 6)], lambda x: libF(x).max_pool2d(x, 2)),
    ("max_pool2d_stride_pad", [(2, 3, 7, 6)], lambda x: libF(x).max_pool2d(x, 3, stride=2, padding=1)),
    ("max_pool2d_dilation", [(1, 2, 7, 7)], lambda x: libF(x).max_pool2d(x, (2, 3), stride=1, dilation=2)),
    ("max_pool2d_3d_input", [(3, 6, 5)], lambda x: libF(x).max_pool2d(x, 2)),
    ("avg_pool2d", [(2, 3, 6, 6)], lambda x: libF(x).avg_pool2d(x, 2)),
    ("avg_pool2d_pad", [(2, 3, 7, 6)], lambda x: libF(x).avg_pool2d(x, 3, stride=2, padding=1)),
    ("avg_pool2d_exclude_pad", [(2, 3, 7, 6)], lambda x: libF(x).avg_pool2d(x, 3, 2, 1, count_include_pad=False)),
    ("nearest_size", [(2, 3, 4, 5)], lambda x: libF(x).interpolate(x, size=(7, 3))),
    ("nearest_scale", [(2, 3, 4, 5)], lambda x: libF(x).interpolate(x, scale_factor=2)),
    ("nearest_1d", [(2, 3, 5)], lambda x: libF(x).interpolate(x, size=8, mode="nearest")),
    ("bilinear_up", [(2, 3, 4, 5)], lambda x: libF(x).interpolate(x, size=(7, 9), mode="bilinear", align_corners=False)),
    ("bilinear_down", [(2, 3, 6, 7)], lambda x: libF(x).interpolate(x, size=(3, 4), mode="bilinear")),
    ("bilinear_scale", [(1, 2, 3, 4)], lambda x: libF(x).interpolate(x, scale_factor=1.5, mode="bilinear")),
    ("bilinear_corners", [(2, 3, 4, 5)], lambda x: libF(x).interpolate(x, size=(6, 9), mode="bilinear", align_corners=True)),
    ("batch_norm_train", [(4, 3, 2, 2), (3,), (3,)], lambda x, w, b: libF(x).batch_norm(x, *stats(x), w, b, training=True)),
    ("batch_norm_1d", [(5, 3)], lambda x: libF(x).batch_norm(x, *stats(x), training=True)),
    ("batch_norm_eval", [(4, 3, 2)], lambda x: libF(x).batch_norm(x, *stats(x), training=False)),
    ("layer_norm", [(2, 3, 4), (4,), (4,)], lambda x, w, b: libF(x).layer_norm(x, (4,), w, b)),
    ("layer_norm_2d", [(2, 3, 4)], lambda x: libF(x).layer_norm(x, [3, 4])),
    ("group_norm", [(2, 6, 3, 2), (6,), (6,)], lambda x, w, b: libF(x).group_norm(x, 3, w, b)),
    ("group_norm_1d", [(2, 4, 5)], lambda x: libF(x).group_norm(x, 2)),
    ("leaky_relu", [(3, 4)], lambda x: libF(x).leaky_relu(x, 0.2)), ("elu", [(3, 4)], lambda x: libF(x).elu(x)),
    ("celu", [(3, 4)], lambda x: libF(x).celu(x, 0.5)), ("selu", [(3, 4)], lambda x: libF(x).selu(x)),
    ("softplus", [(3, 4)], lambda x: libF(x).softplus(x * 8, beta=0.5, threshold=5)),
    ("mish", [(3, 4)], lambda x: libF(x).mish(x)), ("hardtanh", [(3, 4)], lambda x: libF(x).hardtanh(x, -0.5, 1.5)),
    ("relu6", [(3, 4)], lambda x: libF(x).relu6(x * 5)), ("hardsigmoid", [(3, 4)], lambda x: libF(x).hardsigmoid(x * 3)),
    ("hardswish", [(3, 4)], lambda x: libF(x).hardswish(x * 3)), ("logsigmoid", [(3, 4)], lambda x: libF(x).logsigmoid(x * 9)),
    ("softsign", [(3, 4)], lambda x: libF(x).softsign(x)),
    ("bce", [(3, 4), (3, 4)], lambda p, t: libF(p).binary_cross_entropy(p.sigmoid(), t.detach().sigmoid())),
    ("bce_weight_sum", [(3, 4), (3, 4), (4,)], lambda p, t, w: libF(p).binary_cross_entropy(
        p.sigmoid(), t.detach().sigmoid(), weight=w.detach().abs(), reduction="sum")),
    ("bce_logits", [(3, 4), (3, 4)], lambda x, t: libF(x).binary_cross_entropy_with_logits(x * 20, t.detach().sigmoid())),
    ("bce_logits_pos_weight", [(3, 4), (3, 4), (4,)], lambda x, t, w: libF(x).binary_cross_entropy_with_logits(
        x, t.detach().sigmoid(), pos_weight=w.detach().abs(), reduction="none")),
    ("mse", [(3, 4), (3, 4)], lambda x, y: libF(x).mse_loss(x, y)),
    ("l1", [(3, 4), (4,)], lambda x, y: libF(x).l1_loss(x, y.expand(3, 4), reduction="sum")),
]


@pytest.mark.parametrize("name,shapes,fn", OPS, ids=[o[0] for o in OPS])
def test_against_torch(name, shapes, fn):
    helper_test_op(shapes, fn, atol=1e-5, rtol=1e-4, grad_atol=1e-4)


@SETTINGS
@given(st.data(), st.integers(1, 2), st.integers(1, 2), st.integers(1, 3), st.integers(3, 6), st.integers(3, 6),
       st.integers(1, 3), st.integers(1, 2), st.integers(1, 2), st.integers(0, 1), st.booleans())
def test_conv2d_gradcheck(data, n, groups, kernel, h, w, out_per_group, stride, dilation, padding, bias):
    channels = groups * data.draw(st.integers(1, 2))
    if dilation * (kernel - 1) + 1 > min(h, w) + 2 * padding:
        kernel = 1
    check(lambda x, wt, *b: F.conv2d(x, wt, b[0] if b else None, stride, padding, dilation, groups),
          param(data, (n, channels, h, w)), param(data, (groups * out_per_group, channels // groups, kernel, kernel)),
          *([param(data, (groups * out_per_group,))] if bias else []))


@SETTINGS
@given(st.data(), st.integers(1, 2), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1))
def test_conv_transpose2d_and_pools_gradcheck(data, stride, kernel, dilation, padding):
    padding = min(padding, dilation * (kernel - 1))
    check(lambda x, w: F.conv_transpose2d(x, w, stride=stride, padding=padding, dilation=dilation),
          param(data, (1, 2, 3, 3)), param(data, (2, 2, kernel, kernel)))
    check(lambda x: F.max_pool2d(x, 2, stride), param(data, (1, 2, 4, 5), "distinct"))
    check(lambda x: F.avg_pool2d(x, kernel, stride, padding=min(padding, kernel // 2)), param(data, (1, 2, 4, 5)))
    check(lambda x: F.interpolate(x, size=(3 + stride, 2 + kernel), mode="bilinear"), param(data, (1, 1, 3, 4)))
    check(lambda x: F.conv1d(x, Tensor(np.ones((1, 2, kernel))), stride=stride), param(data, (1, 2, 5)))


@SETTINGS
@given(st.data(), st.integers(2, 4), st.sampled_from([1, 2]), st.integers(1, 3))
def test_norms_gradcheck(data, n, groups, spatial):
    c = 2 * groups
    check(lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
          param(data, (n, c, spatial)), param(data, (c,)), param(data, (c,)))
    check(lambda x, w, b: F.layer_norm(x, (spatial,), w, b), param(data, (n, c, spatial)), param(data, (spatial,)),
          param(data, (spatial,)))
    check(lambda x, w: F.group_norm(x, groups, w), param(data, (n, c, spatial + 1)), param(data, (c,)))


def test_windows_is_a_view_and_backward_adds_overlaps():
    from minigrad import ops
    a = np.arange(20.0).reshape(4, 5)
    windows = ops.Windows.apply(Tensor(a), kernel=(2, 2), stride=(1, 1), dilation=(1, 1))
    assert windows.shape == (3, 4, 2, 2) and np.shares_memory(windows.data, a)
    x = Tensor(a, requires_grad=True)
    ops.Windows.apply(x, kernel=(2, 2), stride=(1, 1), dilation=(1, 1)).sum().backward()
    # each element counted once per window that holds it
    np.testing.assert_array_equal(x.grad, np.outer([1, 2, 2, 1], [1, 2, 2, 2, 1]))


def test_layers_load_torch_state_dicts_and_agree():
    torch.manual_seed(0)
    pairs = [(nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2), torch.nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)),
             (nn.BatchNorm2d(4), torch.nn.BatchNorm2d(4)), (nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)),
             (nn.LayerNorm((5, 5)), torch.nn.LayerNorm((5, 5))), (nn.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4)),
             (nn.Conv2d(4, 2, (1, 3), bias=False), torch.nn.Conv2d(4, 2, (1, 3), bias=False))]
    x = np.random.default_rng(0).standard_normal((3, 4, 5, 5)).astype(np.float32)
    for mine, theirs in pairs:
        state = {k: v.numpy() for k, v in theirs.state_dict().items()}
        assert list(mine.state_dict()) == list(state), (list(mine.state_dict()), list(state))
        for key, value in state.items():  # initialised with PyTorch's shapes and dtypes
            assert mine.state_dict()[key].shape == value.shape and mine.state_dict()[key].dtype == value.dtype, key
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(torch.randn(p.shape) * 0.3)
        mine.load_state_dict({k: v.numpy().copy() for k, v in theirs.state_dict().items()})
        inp = x[:, :, 0] if isinstance(mine, nn.BatchNorm1d) else x
        for mode in ("train", "eval", "train"):
            getattr(mine, mode)(), getattr(theirs, mode)()
            np.testing.assert_allclose(mine(Tensor(inp)).data, theirs(torch.tensor(inp)).detach().numpy(), atol=1e-5)
        for key, value in theirs.state_dict().items():  # running statistics moved alike
            np.testing.assert_allclose(mine.state_dict()[key], value.numpy(), atol=1e-6, err_msg=key)
        assert {k for k, _ in mine.named_parameters()} == {k for k, _ in theirs.named_parameters()}


def test_batch_norm_eval_uses_running_statistics():
    bn = nn.BatchNorm1d(2, momentum=0.5)
    x = Tensor(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32))
    bn(x)  # batch mean (2, 20), unbiased var (2, 200)
    np.testing.assert_allclose(bn.running_mean.data, [1.0, 10.0])
    np.testing.assert_allclose(bn.running_var.data, [1.5, 100.5])
    assert bn.num_batches_tracked.item() == 1
    bn.eval()
    out = bn(x).data
    np.testing.assert_allclose(out[:, 0], (np.array([1.0, 3.0]) - 1) / np.sqrt(1.5 + 1e-5), rtol=1e-5)
    assert bn.num_batches_tracked.item() == 1 and len(bn.parameters()) == 2


RAISES = [
    ("conv_channels", [(1, 3, 5, 5), (2, 2, 3, 3)], lambda x, w: libF(x).conv2d(x, w)),
    ("conv_groups", [(1, 4, 5, 5), (3, 2, 3, 3)], lambda x, w: libF(x).conv2d(x, w, groups=2)),
    ("conv_rank", [(3, 5, 5), (2, 3, 3)], lambda x, w: libF(x).conv2d(x, w)),
    ("conv_too_big", [(1, 1, 2, 2), (1, 1, 3, 3)], lambda x, w: libF(x).conv2d(x, w)),
    ("conv_same_stride", [(1, 1, 5, 5), (1, 1, 3, 3)], lambda x, w: libF(x).conv2d(x, w, stride=2, padding="same")),
    ("conv_transpose_channels", [(1, 3, 4, 4), (2, 2, 3, 3)], lambda x, w: libF(x).conv_transpose2d(x, w)),
    ("pool_padding", [(1, 1, 6, 6)], lambda x: libF(x).max_pool2d(x, 2, padding=2)),
    ("interpolate_both", [(1, 1, 4, 4)], lambda x: libF(x).interpolate(x, size=3, scale_factor=2)),
    ("group_norm_groups", [(2, 6, 3)], lambda x: libF(x).group_norm(x, 4)),
    ("layer_norm_shape", [(2, 3, 4)], lambda x: libF(x).layer_norm(x, (3,))),
    ("batch_norm_one_value", [(1, 3)], lambda x: libF(x).batch_norm(x, None, None, training=True)),
]


@pytest.mark.parametrize("name,shapes,fn", RAISES, ids=[r[0] for r in RAISES])
def test_raises_like_torch(name, shapes, fn):
    helper_test_raises(shapes, fn)


def test_unsupported_options_say_so():
    x = Tensor(np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(NotImplementedError, match="ceil_mode"):
        F.max_pool2d(x, 3, ceil_mode=True)
    with pytest.raises(NotImplementedError, match="return_indices"):
        F.max_pool2d(x, 2, return_indices=True)
    with pytest.raises(ValueError, match="mode"):
        F.interpolate(x, size=2, mode="bicubic")


def test_state_dict_order_matches_torch_for_a_composite_model():
    class Mine(nn.Module):
        def __init__(self):
            self.conv, self.bn, self.fc = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Linear(2, 3)

    class Theirs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.fc = torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Linear(2, 3)

    assert list(Mine().state_dict()) == list(Theirs().state_dict())
    assert [n for n, _ in Mine().named_buffers()] == [n for n, _ in Theirs().named_buffers()]


@SETTINGS
@given(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3), st.integers(2, 7), st.integers(2, 7),
       st.integers(1, 3), st.integers(0, 2), st.integers(1, 2), st.integers(1, 2), st.booleans(), st.integers(0, 99))
def test_conv2d_matches_torch_on_drawn_geometries(n, groups, per_group, h, w, kernel, padding, stride, dilation,
                                                  transposed, seed):
    padding = min(padding, kernel // 2)
    if dilation * (kernel - 1) + 1 > min(h, w) + 2 * padding:
        dilation = 1
    if kernel > min(h, w) + 2 * padding:
        kernel = 1
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, groups * per_group, h, w)).astype(np.float32)
    if transposed:  # the same values behind reversed strides
        x = np.ascontiguousarray(x.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)
    weight = rng.standard_normal((2 * groups, per_group, kernel, kernel)).astype(np.float32)
    bias = rng.standard_normal(2 * groups).astype(np.float32)
    helper_test_op(None, lambda a, b, c: libF(a).conv2d(a, b, c, stride, padding, dilation, groups),
                   arrays=[x, weight, bias], atol=1e-4, grad_atol=1e-4)
