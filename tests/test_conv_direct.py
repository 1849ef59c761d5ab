"""oneDNN's direct int8 conv (chipsim.kernels.conv_direct): exact against plain integer numpy at its
bound, the GEMM path past it, and off when it is not exact here, asked off, or handed a NaN.

References are int64 numpy written here (``test_int8_kernels.ref_conv`` / ``ref_grad_input``, no chipsim
code). The inputs are adversarial: every code at its largest magnitude, so each sum reaches its bound;
the direct path is exact only while oneDNN's uint8 sum is below 2**24, which is where it must hand over
to the GEMM path.
"""
import numpy as np
import pytest

from chipsim import kernels as K
from chipsim.errors import ChipsimError
from chipsim.kernels import conv, conv_direct
from chipsim.kernels.exact import set_kernels

from test_int8_kernels import ref_conv, ref_grad_input

pytestmark = pytest.mark.skipif(not conv_direct.available(),
                                reason="oneDNN's direct int8 conv is not present or not exact on this machine")


@pytest.fixture
def direct_on(monkeypatch):
    old = set_kernels("int8")
    monkeypatch.setitem(conv_direct._STATE, "on", True)
    yield
    set_kernels(old)


# The bound is on the uint8 sum oneDNN converts to float32 (conv_direct's docstring): codes travel as
# code + 128, so at 127 x 127 each product is at most 255 * 127 = 32385, and 2**24 / 32385 = 518.06:
# K = 518 is the longest reduction the direct conv takes (518 * 32385 = 16775430 < 16777216) and
# K = 519 the first it hands to the GEMM path (519 * 32385 = 16807815). Both return float32, since
# the float path's own bound is 2**24 / 16129 = 1040.2 products.
@pytest.mark.parametrize("c, unit", [(518, "int8-direct"), (519, "int8")])
@pytest.mark.parametrize("sign", [1, -1])
def test_forward_at_the_bound(direct_on, c, unit, sign):
    """A 1x1 conv over c channels, every activation 127 and every weight sign*127 but one 126 (so the
    uint8 sum, 517 * 32385 + 255 * 126 = 16775175 at c = 518, is odd: a float32 rounding would show):
    the exact integer, in float32, on the path the bound allows."""
    x = np.full((2, c, 3, 4), 127, np.float32)
    w = np.full((3, c, 1, 1), sign * 127, np.float32)
    w[:, 9] = sign * 126
    w[1] = -w[1]
    y = K.conv2d_forward(x, w, 1, 0, int_bound=(127, 127))
    assert K.LAST_UNIT["conv2d_forward"] == unit
    assert y.dtype == np.float32
    assert y[0, 0, 0, 0] == sign * ((c - 1) * 16129 + 127 * 126) and y[1, 1, 2, 3] == -y[0, 0, 0, 0]
    assert np.array_equal(y.astype(np.int64), ref_conv(x, w, 1, 0))


def test_negative_codes_cross_the_zero_point(direct_on):
    """Codes -127 travel as uint8 1 (code + 128): a 3x3 conv, 57 channels (K = 513, 513 * 32385 =
    16613505 < 2**24), activations -127 everywhere but a +127 plane, weights +-127, padding 1 (the
    padded zeros travel as 128 too)."""
    rng = np.random.default_rng(4)
    x = np.full((2, 57, 5, 6), -127, np.float32)
    x[:, 7] = 127
    w = np.where(rng.random((4, 57, 3, 3)) < 0.5, -127, 127).astype(np.float32)
    w[0] = 127
    y = K.conv2d_forward(x, w, 1, 1, int_bound=(127, 127))
    assert K.LAST_UNIT["conv2d_forward"] == "int8-direct"
    want = ref_conv(x, w, 1, 1)
    assert y.dtype == np.float32 and np.array_equal(y.astype(np.int64), want)
    assert want[0, 0, 2, 2] == (-127 * 56 + 127) * 127 * 9      # the whole window: 9 taps of each channel


@pytest.mark.parametrize("o, unit", [(57, "int8-direct"), (58, "int8")])
def test_grad_input_at_the_bound(direct_on, o, unit):
    """The input gradient reduces over O * 3 * 3 terms, the error being the operand sent as uint8:
    57 * 9 = 513 is under the bound, 58 * 9 = 522 past it, where the GEMM path runs. Errors 127,
    weights -127 but one channel's +127."""
    gy = np.full((2, o, 4, 5), 127, np.float32)
    w = np.full((o, 9, 3, 3), -127, np.float32)
    w[:, 3] = 127
    gx = K.conv2d_grad_input(gy, w, (2, 9, 4, 5), 1, 1, int_bound=(127, 127))
    assert K.LAST_UNIT["conv2d_grad_input"] == unit
    want = ref_grad_input(gy, w, (2, 9, 4, 5), 1, 1)
    assert gx.dtype == np.float32 and np.array_equal(gx.astype(np.int64), want)
    assert want[0, 0, 1, 1] == -o * 9 * 16129                    # an interior pixel: all 9 taps


def test_the_default_models_products_take_it():
    """The bound admits the default 4-bit model's products: forward K = 32 * 9 = 288 with 4-bit codes
    (288 * 135 * 7 = 272160), input gradient K = 288 with 8-bit errors (288 * 255 * 7 = 514080); and at
    8 x 8 bits K = 288 (288 * 32385 = 9326880). Not K = 1040 at 8 x 8 bits, which the float path's
    bound alone would have allowed."""
    assert conv_direct.applies((7, 7), 288) and conv_direct.applies((127, 7), 288)
    assert conv_direct.applies((127, 127), 288) and not conv_direct.applies((127, 127), 1040)


def test_off_when_asked_or_not_exact_here(direct_on, monkeypatch):
    """CHIPSIM_DIRECT_CONV=off, and a failed probe, both leave the GEMM path (the same integers)."""
    rng = np.random.default_rng(2)
    x, w = rng.integers(-7, 8, (2, 16, 6, 6)).astype(np.float32), rng.integers(-7, 8, (8, 16, 3, 3)).astype(np.float32)
    want = ref_conv(x, w, 1, 1)
    K.conv2d_forward(x, w, 1, 1, int_bound=(7, 7))
    assert K.LAST_UNIT["conv2d_forward"] == "int8-direct"
    monkeypatch.setitem(conv_direct._STATE, "on", None)
    monkeypatch.setenv("CHIPSIM_DIRECT_CONV", "off")
    y = K.conv2d_forward(x, w, 1, 1, int_bound=(7, 7))
    assert K.LAST_UNIT["conv2d_forward"] == "int8" and np.array_equal(y.astype(np.int64), want)
    monkeypatch.setitem(conv_direct._STATE, "on", True)
    monkeypatch.setitem(conv_direct._STATE, "probe", False)
    y = K.conv2d_forward(x, w, 1, 1, int_bound=(7, 7))
    assert K.LAST_UNIT["conv2d_forward"] == "int8" and np.array_equal(y.astype(np.int64), want)


def test_below_the_channel_threshold_the_gemm_path_runs(direct_on):
    """Fewer than DIRECT_MIN_CHANNELS input channels: the im2col + GEMM path (faster there)."""
    x = np.ones((1, conv.DIRECT_MIN_CHANNELS - 1, 5, 5), np.float32)
    K.conv2d_forward(x, np.ones((2, x.shape[1], 3, 3), np.float32), 1, 1, int_bound=(7, 7))
    assert K.LAST_UNIT["conv2d_forward"] == "int8"


def test_bad_environment_value(monkeypatch):
    monkeypatch.setitem(conv_direct._STATE, "on", None)
    monkeypatch.setenv("CHIPSIM_DIRECT_CONV", "fast")
    with pytest.raises(ChipsimError, match="CHIPSIM_DIRECT_CONV.*auto, off"):
        conv_direct.in_use()


def test_a_nan_takes_the_float_path(direct_on):
    """int8 has no NaN: a diverged activation goes to the float path, which carries it on."""
    x = np.zeros((1, 16, 4, 4), np.float32)
    x[0, 3, 1, 2] = np.nan
    y = K.conv2d_forward(x, np.ones((2, 16, 3, 3), np.float32), 1, 1, int_bound=(7, 7))
    assert K.LAST_UNIT["conv2d_forward"] == "float"
    assert np.isnan(y[0, :, 1, 2]).all() and not np.isnan(y[0, :, 3, 3]).any()
