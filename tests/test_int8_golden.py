"""Issue 25's golden test: the int8 unit and the float path train bit-identical weights.

For each rule that applies to the default model (models/cnn_small.yaml; CwC, whose channels must
split into the classes' groups, on its own models/cwc_mnist.yaml), two real training steps
at 4 bits (hwconfigs/44core_4bit.yaml) and at 8 bits (44core_8bit.yaml: the 8-bit codes still fit
int8, the grad-weight reductions take the wide path), once with ``set_kernels("float")`` and twice
with ``set_kernels("int8")`` (its GEMMs alone, then with oneDNN's direct convs): the digest of
everything the trainer holds and the trace's totals must match bit for bit. Exact arithmetic does not depend on which unit sums it, so any difference
is a bug (a dtype, a layout, a rounding that the int path does differently).
"""

import pytest

from golden_cases import REPO, trace_totals, two_steps

from chipsim.config import RULES
from chipsim.kernels import LAST_UNIT, set_kernels

DEFAULT_MODEL = REPO / "models" / "cnn_small.yaml"
MODEL_OF = {"cwc": REPO / "models" / "cwc_mnist.yaml"}
RULES_HERE = [r for r in RULES if r != "cff"]          # CFF runs only on a ViT


def _two_steps(preset: str, rule: str) -> tuple:
    from chipsim.config import load_config
    cfg = load_config(str(REPO / "hwconfigs" / preset), (f"workload.model={MODEL_OF.get(rule, DEFAULT_MODEL)}", f"workload.rule={rule}",
                                                          "training.batch_size=6"))
    _, trace, digest = two_steps(cfg)
    return digest, trace_totals(trace)


@pytest.mark.parametrize("preset", ["44core_4bit.yaml", "44core_8bit.yaml"])
@pytest.mark.parametrize("rule", RULES_HERE)
def test_int8_unit_and_float_path_train_the_same_bits(preset, rule, monkeypatch):
    """The float path, then the int8 unit twice: its GEMMs alone (im2col + ``torch._int_mm``), and with
    oneDNN's direct convs where they apply (``conv_direct``, when present and exact here)."""
    from chipsim.kernels import conv_direct
    old = set_kernels("float")
    try:
        LAST_UNIT.clear()
        want = _two_steps(preset, rule)
        assert set(LAST_UNIT.values()) == {"float"}
        set_kernels("int8")
        monkeypatch.setitem(conv_direct._STATE, "on", False)
        LAST_UNIT.clear()
        got = _two_steps(preset, rule)
        assert "int8" in LAST_UNIT.values() and "int8-direct" not in LAST_UNIT.values()
        if conv_direct.available():
            monkeypatch.setitem(conv_direct._STATE, "on", True)
            LAST_UNIT.clear()
            direct = _two_steps(preset, rule)
            assert "int8-direct" in LAST_UNIT.values()     # the direct conv did run
            assert direct[1] == want[1], "trace totals differ (direct conv)"
            assert direct[0] == want[0], "weights, optimizer state or RNG streams differ (direct conv)"
    finally:
        set_kernels(old)
    assert got[1] == want[1], "trace totals differ"
    assert got[0] == want[0], "weights, optimizer state or RNG streams after two steps differ"


@pytest.mark.parametrize("unit, bits, want", [("int8", 4, "int8"), ("int8", 16, "float32"),
                                              ("float", 4, "float32")])
def test_the_block_hands_the_int8_unit_int8_codes(unit, bits, want):
    """On the int8 unit a block's quantizers make its conv operands, input codes (kept for the weight
    gradient too) and error codes, as int8 (no float32 copy of a 4-bit tensor); 16-bit codes, which
    int8 cannot hold, and the float path keep float32 codes."""
    import numpy as np
    from chipsim import kernels as K
    from chipsim.config import Precision
    from chipsim.engine.layers.block import QuantBlock
    from chipsim.modelspec import Block
    prec = Precision(weight_bits=4, activation_bits=bits, gradient_bits=8 if bits == 4 else 16, update_bits=16,
                     goodness_bits=bits)
    old = set_kernels(unit)
    try:
        blk = QuantBlock(0, Block(type="conv", channels=4, kernel=3, padding=1), (3, 6, 6), prec,
                         np.random.default_rng(0))
        x = np.random.default_rng(1).standard_normal((5, 3, 6, 6)).astype(np.float32)
        out, cache = blk.forward(x, train=True)
        assert cache["zq"].dtype == want
        gy = blk.backward_pre(np.ones_like(out), cache)
        rng = np.random.default_rng(2)
        assert blk.quantize_error(gy, rng, as_int8=K.use_int8())[0].dtype == want      # as grad_weight asks
        assert blk.grad_weight(gy, cache, rng).shape == blk.w_shape
    finally:
        set_kernels(old)
