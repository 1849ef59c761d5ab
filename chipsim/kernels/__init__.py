"""Numeric kernels: convolution, dense, batch norm, ReLU, max-pool, goodness, transformer ops.

Pure mechanism, no policy: these functions know nothing about learning rules,
cores or configs.  Layout is NCHW, arrays are float32 unless stated.

The package is cut along what each kernel does:

* ``exact``: the exact GEMM dispatch every weighted sum goes through;
* ``int8``: the int8 dot-product unit it uses where the CPU has one (``kernel_path()`` names it);
* ``conv`` and ``dense``: the weighted sums (forward, grad-weight, grad-input);
* ``norm``: batch norm;
* ``elementwise``: ReLU, max-pool, goodness;
* ``tokens``, ``attention``, ``layernorm``, ``gelu``: the vision transformer's kernels
  (patch embedding, token-wise dense, token mean, adds; attention products and softmax;
  layer norm; GELU).

Everything public is re-exported here, so callers write ``from chipsim import kernels as K``.
"""
from __future__ import annotations

from .. import malloc_tuning

malloc_tuning.apply()   # the kernels' large temporaries are reused, not page-faulted in each call

from .conv import _nchw_to_grid, conv2d_forward, conv2d_grad_input, conv2d_grad_weight  # noqa: E402
from .dense import dense_forward, dense_grad_input, dense_grad_weight  # noqa: E402
from .elementwise import (decode, goodness, goodness_backward, maxpool2d_backward, maxpool2d_forward,  # noqa: E402
                          numba_threads, relu_backward, relu_forward)
from .exact import (LAST_PATH, LAST_UNIT, MIN_CHUNK, PARALLEL, _chunked_fp64, _fp32_chunk,  # noqa: E402
                    accumulation_path, kernel_path, set_kernels)
from .int8 import use_int8  # noqa: E402
from .norm import (BNCache, batchnorm_backward, batchnorm_backward_fixed_stats,  # noqa: E402
                   batchnorm_eval_forward, batchnorm_train_forward, batchnorm_update_running)
from .attention import (attn_scores, attn_scores_grad_key, attn_scores_grad_query, attn_values,  # noqa: E402
                        attn_values_grad_probs, attn_values_grad_values, softmax, softmax_backward)
from .gelu import gelu_backward, gelu_forward  # noqa: E402
from .layernorm import LNCache, layernorm_backward, layernorm_forward  # noqa: E402
from .tokens import (bias_add, bias_grad, patch_embed_forward, patch_embed_grad_weight, patchify,  # noqa: E402
                     residual_add, token_dense_forward, token_dense_grad_input, token_dense_grad_weight,
                     token_l2_normalize, token_mean, token_mean_backward)

__all__ = [
    "LAST_PATH", "LAST_UNIT", "accumulation_path", "kernel_path", "set_kernels", "use_int8",
    "conv2d_forward", "conv2d_grad_weight", "conv2d_grad_input",
    "dense_forward", "dense_grad_weight", "dense_grad_input",
    "BNCache", "batchnorm_train_forward", "batchnorm_eval_forward",
    "batchnorm_backward", "batchnorm_backward_fixed_stats", "batchnorm_update_running",
    "relu_forward", "relu_backward",
    "maxpool2d_forward", "maxpool2d_backward", "goodness", "goodness_backward", "decode",
    "patchify", "patch_embed_forward", "patch_embed_grad_weight",
    "token_dense_forward", "token_dense_grad_weight", "token_dense_grad_input",
    "token_mean", "token_mean_backward", "bias_add", "bias_grad", "residual_add", "token_l2_normalize",
    "attn_scores", "attn_scores_grad_query", "attn_scores_grad_key",
    "attn_values", "attn_values_grad_probs", "attn_values_grad_values", "softmax", "softmax_backward",
    "LNCache", "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
    # used by tests and benchmarks
    "MIN_CHUNK", "PARALLEL", "numba_threads", "_chunked_fp64", "_fp32_chunk", "_nchw_to_grid",
]
