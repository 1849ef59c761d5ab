"""Direct int8 convolutions through oneDNN: forward and input gradient without an im2col.

Why: on the int8 unit a conv used to be im2col (int8, channels-last) + one ``torch._int_mm`` + a copy
back to NCHW. At the default model's shapes the data movement cost more than the GEMM (a 16->32 conv
at 14x14, 64 samples, forward: 1.1 ms, of which the GEMM 0.2 ms), while oneDNN's direct int8
convolution, the one torch's own quantized convs run, never materialises the columns: 0.15 ms for the
same product. torch exposes it as ``torch.ops.onednn.qconv2d_pointwise`` (uint8 activations with a
zero point, int8 weights, int32 sums, a float32 output).

Exactness argument. The codes are signed and fit int8 (``|x| <= ma <= 127``); oneDNN's x86 kernels
take uint8 activations only, so they are sent as ``u = x + 128`` with zero point 128. oneDNN sums
``acc_u = sum u * w`` in int32, converts it to float32, and subtracts the zero point's compensation
``128 * sum w`` there, in float32, before the per-channel scale. So the result is exact only while
``acc_u`` itself is below 2**24, a bound on ``(ma + 128) * mb`` per product, not on ``ma * mb``: found
by a test at the float path's bound (K = 1035 products of 127 * 127 came out one off, the uint8 sum
being past 2**24). Under ``K * (ma + 128) * mb < 2**24`` every term is an exact float32 integer, the
difference is the exact sum of the codes' products, and the one product ``float32(acc) * scale`` rounds
as the float path's rescale does. For the default 4-bit model this allows K up to 17,754 (forward) and
9,398 (input gradient, 8-bit errors); at 8 bits x 8 bits, K up to 518.

The path is taken only under that bound, and only after a one-time probe has found this build and CPU
exact at it (:func:`available`): oneDNN's kernels for CPUs without VNNI multiply in int16 pairs that
saturate, and the probe's all-extreme operands would show it.

The input gradient of a stride-1 conv is itself a conv: the error, padded by ``k - 1 - p``, against
the kernel flipped in both spatial axes with its in/out channels swapped. The weight gradient stays
on the GEMM path (``conv._grad_weight_int8``): as a convolution its kernel is the whole error map,
which oneDNN ran 3x slower than im2col + GEMM here.

``CHIPSIM_DIRECT_CONV=auto|off`` turns it off (the tests that compare the paths set ``_STATE["on"]``);
results are the same bits either way.
"""
from __future__ import annotations

import os

import numpy as np
from numba import njit

from .exact import _MOVE
from .int8 import INT8_MAX, gemm_threads

F32_EXACT = 2 ** 24
ZERO_POINT = 128            # int8 codes travel as uint8 code + 128
_STATE: dict = {"on": None, "probe": None}


def _enabled() -> bool:
    if _STATE["on"] is None:
        v = os.environ.get("CHIPSIM_DIRECT_CONV", "auto").strip().lower() or "auto"
        if v not in ("auto", "off"):
            from ..errors import ChipsimError
            raise ChipsimError(f"environment variable CHIPSIM_DIRECT_CONV: {v!r} is not one of auto, off")
        _STATE["on"] = v == "auto"
    return _STATE["on"]


def available() -> bool:
    """oneDNN's direct int8 conv is in this torch build, runs on this CPU and is exact at the bound.

    Probed once per process on two products whose sums are known:

    * 16 input channels, 3x3 (K = 144), every activation code 127 (uint8 255) and every weight -127
      or 127: each output is +-144 * 16129 = +-2322576 where the window is whole. int16 pair
      products (255 * 127 * 2 = 64770) would saturate; a scale of 3 checks the rescale.
    * a 1x1 conv at the bound, K = 518 (518 * 255 * 127 = 16775430 < 2**24): activation codes 127,
      weights 127 but one 126, so the uint8 sum (16775175) is odd and just under 2**24.
    """
    if _STATE["probe"] is None:
        ok = False
        try:
            x = np.full((2, 16, 5, 5), INT8_MAX, np.float32)
            w = np.full((2, 16, 3, 3), INT8_MAX, np.float32)
            w[1] = -INT8_MAX
            got = _qconv(x, w, 1, 1, np.array([1.0, 3.0], np.float32))
            ok = got is not None and got[0, 0, 2, 2] == 2322576 and got[1, 1, 2, 2] == -3 * 2322576 \
                and got[0, 0, 0, 0] == 4 * 16 * 16129
            x = np.full((1, 518, 1, 1), INT8_MAX, np.float32)
            w = np.full((1, 518, 1, 1), INT8_MAX, np.float32)
            w[0, 9] = INT8_MAX - 1
            want = 517 * 16129 + 127 * 126              # = 8354695; the uint8 sum 517*32385 + 32130 = 16775175
            got = _qconv(x, w, 0, 0, np.ones(1, np.float32))
            ok = ok and got is not None and got[0, 0, 0, 0] == want
        except Exception:          # noqa: BLE001 - any failure means: not on this machine
            ok = False
        _STATE["probe"] = ok
    return _STATE["probe"]


def in_use() -> bool:
    """The direct convolutions run in this process where they apply (on, and available here)."""
    return _enabled() and available()


def applies(int_bound, k: int) -> bool:
    """The direct path computes a product of ``k``-term sums exactly: both operands' codes fit int8, the
    uint8 sum is exact in float32 (``k * (ma + 128) * mb < 2**24``, ``ma`` bounding the codes sent as
    uint8: the activations, or the error for the input gradient), on, and available here."""
    if int_bound is None or not _enabled():
        return False
    ma, mb = int(np.ceil(int_bound[0])), int(np.ceil(int_bound[1]))
    return max(ma, mb) <= INT8_MAX and k * (ma + ZERO_POINT) * mb < F32_EXACT and available()


@njit(**_MOVE)
def _to_u8_nhwc(x, out):
    """Signed integer codes (N, C, H*W) float32 or int8, |x| <= 127 -> ``x + 128`` in uint8, channels-last
    (N, H*W, C), the layout oneDNN computes in (given NCHW it reorders first: 0.28 against 0.15 ms for
    the 16->32 conv at 14x14, 64 samples); whether a NaN was seen."""
    n, c, p = x.shape
    bad = False
    for b in range(n):
        for t in range(p):
            d = out[b, t]                      # one pixel's C bytes written together
            for ci in range(c):
                v = x[b, ci, t]
                bad |= v != v
                d[ci] = np.uint8(np.int32(v if v == v else 0) + 128)
    return bad


@njit(**_MOVE)
def _nhwc_to_nchw(y, out):
    """(N, H*W, C) -> (N, C, H*W), float32: the channels-last output copied to the engine's layout."""
    n, p, c = y.shape
    for b in range(n):
        for ci in range(c):
            for t in range(p):
                out[b, ci, t] = y[b, t, ci]


def to_uint8_nhwc(x):
    """Integer codes ``x (N, C, H, W)`` (float32 or int8) as the uint8 channels-last tensor oneDNN takes (an NCHW-shaped torch
    view of (N, H, W, C) memory, ``code + 128``); None on a NaN."""
    import torch
    n, c, h, wd = x.shape
    xu = np.empty((n, h, wd, c), np.uint8)
    x = np.ascontiguousarray(x) if x.dtype == np.int8 else np.ascontiguousarray(x, np.float32)
    if _to_u8_nhwc(x.reshape(n, c, h * wd), xu.reshape(n, h * wd, c)):
        return None
    return torch.from_numpy(xu).permute(0, 3, 1, 2)


def pack(w, scale, x_shape, ph, pw):
    """oneDNN's packed int8 weights for ``w (O, C, kh, kw)``, per-output-channel ``scale``, inputs of
    ``x_shape``, stride 1 and padding (ph, pw): what :func:`convolve` takes. (Packed without the shape,
    oneDNN packs in about half the time on small kernels but then convolves more slowly: side by side,
    the three products of each default conv layer took the same time either way, 0.99-1.01x.)"""
    import torch
    ws = torch.from_numpy(np.ascontiguousarray(scale, np.float32))
    w8 = torch.from_numpy(np.ascontiguousarray(w, np.int8))
    return torch.ops.onednn.qconv_prepack(w8, ws, 1.0, ZERO_POINT, [1, 1], [int(ph), int(pw)], [1, 1], 1,
                                          list(x_shape)), ws


def convolve(tx, packed, ph, pw):
    """The direct conv of :func:`to_uint8_nhwc`'s ``tx`` with :func:`pack`'s weights: a float32 torch
    tensor, ``float32(acc) * scale[o]``, channels-last."""
    import torch
    qw, ws = packed
    zp = torch.zeros(ws.shape[0], dtype=torch.int64)
    return torch.ops.onednn.qconv2d_pointwise(tx, 1.0, ZERO_POINT, qw, ws, zp, None, [1, 1], [int(ph), int(pw)],
                                              [1, 1], 1, 1.0, 0, torch.float32, "none", [], "")


def _qconv(x, w, ph, pw, scale):
    """conv(x, w) with padding (ph, pw), stride 1, as float32 NCHW: ``float32(acc) * scale[o]``;
    None when ``x`` or ``w`` holds a NaN (the caller's float path carries it on)."""
    n, o = x.shape[0], w.shape[0]
    if np.isnan(w).any():
        return None
    tx = to_uint8_nhwc(x)
    if tx is None:
        return None
    with gemm_threads():
        y = convolve(tx, pack(w, scale, tx.shape, ph, pw), ph, pw)
    ho, wo = y.shape[2], y.shape[3]
    out = np.empty((n, o, ho, wo), np.float32)
    yl = y.permute(0, 2, 3, 1).contiguous().numpy()         # a view: oneDNN's output is channels-last
    _nhwc_to_nchw(yl.reshape(n, ho * wo, o), out.reshape(n, o, ho * wo))
    return out


def forward(x, w, ph, pw, out_scale=None):
    """The stride-1 conv of integer codes ``x (N,C,H,W)``, ``w (O,C,kh,kw)``: the exact sums as float32,
    times ``out_scale[o]`` when given (rounded once, as ``conv2d_forward``'s rescale). The caller checks
    :func:`applies`. None on a NaN operand."""
    o = w.shape[0]
    scale = np.ones(o, np.float32) if out_scale is None else np.asarray(out_scale, np.float32).reshape(o)
    return _qconv(x, w, ph, pw, scale)


def grad_input(gy, w, x_shape, ph, pw):
    """dL/dx of a stride-1 conv for integer error codes ``gy (N,O,Ho,Wo)``: the conv of ``gy``, padded by
    ``k - 1 - p``, with ``w`` flipped and its channels swapped. None when a padding exceeds ``k - 1``
    (not a conv then) or on a NaN."""
    o, c, kh, kw = w.shape
    qh, qw = kh - 1 - ph, kw - 1 - pw
    if qh < 0 or qw < 0:
        return None
    wt = np.ascontiguousarray(np.asarray(w)[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    gx = _qconv(gy, wt, qh, qw, np.ones(c, np.float32))
    if gx is not None and gx.shape[2:] != tuple(x_shape[2:]):
        return None
    return gx
