"""Where a 4-bit conv layer's step goes on the int8 unit: each piece of its three products, timed alone.

Run: ``python benchmarks/conv_parts.py [--threads 1] [--batch 64]``

For each conv layer of the default model, on the operands ``benchmarks/kernels.py`` uses (signed 4-bit
activation and error codes as int8 NCHW, as the block's quantizers make them for the int8 unit; weight
codes as float32), the pieces the engine's int8 path runs, in order:

* forward and input gradient on oneDNN's direct conv (``chipsim.kernels.conv_direct``): the codes to
  uint8 channels-last, the weights packed, the convolution, the channels-last result copied back to NCHW;
  below 8 input channels the forward takes the GEMM path on the NCHW grid instead (pad, im2col,
  ``torch._int_mm``, copy back);
* weight gradient (``chipsim.kernels.conv``): the padded input, im2col (the NCHW grid's below 8 channels
  or on long rows, else channels-last), ``torch._int_mm``, the error laid out as the GEMM's operand;

then each product whole, as the engine calls it, and torch's float32 step (forward and both gradients,
as ``kernels.py`` times it). Each figure is the median of 7 blocks of 20 calls. It shows what
``kernels.py`` cannot: how much of a layer's time is the integer products and how much the conversions
between the engine's NCHW codes and the units' channels-last operands; and the *floor*, the products and
their weight packing alone, so how fast the layer could run against torch if every conversion were free.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))
from kernels import KS, PAD, TARGET, default_model_layers, torch_step  # noqa: E402
from rounds import pin_torch_threads  # noqa: E402

from chipsim import kernels as K  # noqa: E402
from chipsim.kernels import conv, conv_direct  # noqa: E402
from chipsim.kernels.int8 import int8_gemm, to_int8  # noqa: E402
from chipsim.kernels.layout import _grid_to_nchw_scaled_into, _im2col_grid  # noqa: E402
from chipsim.kernels.layout_int8 import (im2col_cl, nchw_to_grid_cl, nchw_to_grid_i8, pad_planes_cl,  # noqa: E402
                                          pad_planes_i8)


# the pieces that are the products themselves (with oneDNN's weight packing): the rest are conversions
PRODUCT_PIECES = ("convolution", "pack weights", "GEMM (torch._int_mm)")


def ms(fn, calls=20, blocks=7):
    fn()
    times = []
    for _ in range(blocks):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        times.append((time.perf_counter() - t) / calls)
    return 1e3 * statistics.median(times)


def direct_pieces(x, w, pad):
    """The direct conv's four pieces on ``x``, ``w``, as ``conv_direct._qconv`` runs them."""
    n, o = x.shape[0], w.shape[0]
    ones = np.ones(o, np.float32)
    tx = conv_direct.to_uint8_nhwc(x)
    packed = conv_direct.pack(w, ones, tx.shape, pad, pad)
    y = conv_direct.convolve(tx, packed, pad, pad)
    yl = y.permute(0, 2, 3, 1).contiguous().numpy()
    out = np.empty((n, o, y.shape[2] * y.shape[3]), np.float32)
    return {
        "to uint8 channels-last": ms(lambda: conv_direct.to_uint8_nhwc(x)),
        "pack weights": ms(lambda: conv_direct.pack(w, ones, tx.shape, pad, pad)),
        "convolution": ms(lambda: conv_direct.convolve(tx, packed, pad, pad)),
        "copy back to NCHW": ms(lambda: conv_direct._nhwc_to_nchw(yl.reshape(n, -1, o), out)),
    }


def forward_gemm_pieces(x, w, pad):
    """The forward below DIRECT_MIN_CHANNELS, as ``conv._forward_int8_nchw`` runs it: the NCHW grid padded
    in int8, its im2col, ``w (O, K) @ cols``, the grid copied back to NCHW (rescaled)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    wp = wd + pad
    xp = pad_planes_i8(x, pad, pad, wp, KS - 1)[0]
    cols = _im2col_grid(xp, n, c, KS, KS, wp, h)
    w8 = to_int8(w.reshape(o, -1))
    acc = int8_gemm(w8, cols, (7, 7))
    y, scale = np.empty((n, o, h, wd), np.float32), np.ones(o, np.float32)
    return {"pad the input": ms(lambda: pad_planes_i8(x, pad, pad, wp, KS - 1)),
            "im2col (grid)": ms(lambda: _im2col_grid(xp, n, c, KS, KS, wp, h)),
            "GEMM (torch._int_mm)": ms(lambda: int8_gemm(w8, cols, (7, 7))),
            "copy back to NCHW": ms(lambda: _grid_to_nchw_scaled_into(acc, scale, y, h, wp, wd))}


def weight_grad_pieces(x, gy, pad):
    """The weight gradient's pieces in the layout ``conv._grad_weight_int8`` picks for this layer."""
    n, c, h, wd = x.shape
    wp = wd + pad
    bound, k_eff = (7, 7), n * h * wd
    if c < conv.CL_MIN_CHANNELS:                     # both in the NCHW grid
        g8 = nchw_to_grid_i8(gy, wp)[0]
        xp = pad_planes_i8(x, pad, pad, wp, KS - 1)[0]
        cols = _im2col_grid(xp, n, c, KS, KS, wp, h)
        out = {"pad the input": lambda: pad_planes_i8(x, pad, pad, wp, KS - 1),
               "im2col (grid)": lambda: _im2col_grid(xp, n, c, KS, KS, wp, h),
               "GEMM (torch._int_mm)": lambda: int8_gemm(g8, cols.T, bound, k_eff=k_eff),
               "lay out the error": lambda: nchw_to_grid_i8(gy, wp)}
        return {k: ms(f) for k, f in out.items()}
    g8 = nchw_to_grid_cl(gy, wp)[0]
    if h * wp >= conv.GRID_MIN_ROW:                  # the NCHW grid's im2col, the error channels-last
        xp = pad_planes_i8(x, pad, pad, wp, KS - 1)[0]
        cols = _im2col_grid(xp, n, c, KS, KS, wp, h)
        out = {"pad the input": lambda: pad_planes_i8(x, pad, pad, wp, KS - 1),
               "im2col (grid)": lambda: _im2col_grid(xp, n, c, KS, KS, wp, h),
               "GEMM (torch._int_mm)": lambda: int8_gemm(cols, g8, bound, k_eff=k_eff)}
    else:                                            # both channels-last
        xp = pad_planes_cl(x, pad, pad, wp, KS - 1)[0]
        cols = im2col_cl(xp, KS, KS, wp, h)
        out = {"pad the input": lambda: pad_planes_cl(x, pad, pad, wp, KS - 1),
               "im2col (channels-last)": lambda: im2col_cl(xp, KS, KS, wp, h),
               "GEMM (torch._int_mm)": lambda: int8_gemm(g8.T, cols, bound, k_eff=k_eff)}
    out["lay out the error"] = lambda: nchw_to_grid_cl(gy, wp)
    return {k: ms(f) for k, f in out.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    ap.add_argument("--batch", type=int, default=64, help="samples (default 64, as kernels.py)")
    args = ap.parse_args(argv)
    pin_torch_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"GEMM unit: {K.kernel_path()}; torch threads {torch.get_num_threads()}; batch {args.batch}; "
          "median ms of 7 blocks of 20 calls")
    for name, n, c, h, wd, o in default_model_layers(args.batch):
        x = rng.integers(-7, 8, (n, c, h, wd)).astype(np.int8)
        w = rng.integers(-7, 8, (o, c, KS, KS)).astype(np.float32)
        gy = rng.integers(-7, 8, (n, o, h, wd)).astype(np.int8)
        bound = (7, 7)
        print(f"\n{name}")
        wt = np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
        products = {"forward": direct_pieces(x, w, PAD) if c >= conv.DIRECT_MIN_CHANNELS
                    else forward_gemm_pieces(x, w, PAD),
                    "weight grad": weight_grad_pieces(x, gy, PAD),
                    "input grad": direct_pieces(gy, wt, KS - 1 - PAD) if o >= conv.DIRECT_MIN_CHANNELS else {}}
        for product, pieces in products.items():
            for piece, t in pieces.items():
                print(f"  {product:<13}{piece:<24}{t:8.3f}")
        whole = {"forward": ms(lambda: K.conv2d_forward(x, w, 1, PAD, int_bound=bound, out_scale=np.ones(o, np.float32))),
                 "weight grad": ms(lambda: K.conv2d_grad_weight(x, gy, (KS, KS), 1, PAD, int_bound=bound)),
                 "input grad": ms(lambda: K.conv2d_grad_input(gy, w, x.shape, 1, PAD, int_bound=bound))}
        units = {f: K.LAST_UNIT[f] for f in ("conv2d_forward", "conv2d_grad_weight", "conv2d_grad_input")}
        print("  whole, as the engine calls them: " + ", ".join(f"{p} {t:.3f}" for p, t in whole.items())
              + f" (sum {sum(whole.values()):.3f}); units " + "/".join(units.values()))
        # the floor: what the step would take if every conversion around the products were free
        floor = sum(t for pieces in products.values() for piece, t in pieces.items() if piece in PRODUCT_PIECES)
        ref = ms(torch_step(n, c, h, wd, o, rng, args.threads))
        called = sum(whole.values())
        gone = called - ref / TARGET                     # what must go for the target, of called - floor
        print(f"  torch float32 step {ref:.3f}; the products and their weight packing alone {floor:.3f}, so with "
              f"every conversion free this layer would run at {ref / floor:.2f}x torch "
              f"({'above' if ref / floor >= TARGET else 'below'} the {TARGET:.1f}x target); "
              f"as called: {ref / called:.2f}x"
              + (f"; {TARGET:.1f}x needs {gone:.2f} ms of the {called - floor:.2f} ms around the products gone"
                 if gone > 0 else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
