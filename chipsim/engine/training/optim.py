"""Optimizers on master weights, with their state kept at ``precision.optimizer_bits``.

The optimizer works on float32 *values* of the master weights; the master
store (``chipsim.quant.FixedPoint`` at ``update_bits``) rounds each update onto
its grid, which is what an on-chip fixed-point accumulator would do.

Its state (SGD's momentum, Adam's moments) is what a core must keep in SRAM
between steps, so it lives in ``chipsim.quant.QuantStore`` at
``optimizer_bits`` (32 = float32), allocated when a tensor is registered --
the trace sizes the ``optimizer_state`` buffers from those very arrays. Each
step a core reads the stored state, computes the new moments in float32
registers, uses them for this step's update and writes them back rounded
(``precision.rounding``). Adam keeps the *square root* of its second moment:
``v`` spans the square of the gradients' range, which a per-tensor linear code
cannot hold at 8 bits, while ``sqrt(v)`` has the gradients' own range.
"""
from __future__ import annotations

import numpy as np

from ...kernels.update import adam_moments, adam_step
from ...quant import QuantStore
from ...trace.work import costed

SGD_MOMENTUM_OPS = 3     # buf = momentum * buf + g; delta = -lr * buf
SGD_OPS = 1              # delta = -lr * g
# Adam per weight, as _adam computes it: m = b1*m + (1-b1)*g (3); v = b2*s*s + (1-b2)*g*g from the stored
# s = sqrt(v) (5); sqrt(v) to store (1); mhat = m / c1 (1); vhat = v / c2 (1); sqrt(vhat) (1); + eps (1);
# mhat / that (1); times -lr (1)
ADAM_OPS = 15


class _Optimizer:
    """State stores per registered tensor key ('w0', 'w1', ..., 'emb')."""

    def __init__(self, bits: int = 32, rounding: str = "nearest", scale_mode: str = "float"):
        self.bits, self.rounding, self.scale_mode = bits, rounding, scale_mode
        self.stores: dict = {}

    def _store(self, shape, signed=True) -> QuantStore:
        return QuantStore(shape, self.bits, signed=signed, rounding=self.rounding, scale_mode=self.scale_mode)

    def state_bytes(self, key) -> int:
        """Bytes of SRAM the state of ``key`` takes: what the stores hold."""
        return sum(s.nbytes for s in self.stores.get(key, {}).values())

    def state_values(self, key) -> int:
        """Values of state kept for ``key`` (Adam: two per weight), whatever their width."""
        return sum(s.codes.size for s in self.stores.get(key, {}).values())

    def state_dict(self) -> dict:
        return {"stores": {k: {n: s.state() for n, s in d.items()} for k, d in self.stores.items()},
                **self._extra_state()}

    def load_state_dict(self, d) -> None:
        for k, named in d["stores"].items():
            for n, st in named.items():
                self.stores[k][n].load_state(st)
        self._load_extra(d)

    def _extra_state(self) -> dict:
        return {}

    def _load_extra(self, d) -> None:
        pass


class SGD(_Optimizer):
    """SGD with optional momentum; momentum 0 keeps no state (cheapest on chip)."""

    def __init__(self, momentum: float = 0.0, **kw):
        super().__init__(**kw)
        self.momentum = momentum

    def register(self, key, shape) -> None:
        self.stores[key] = {"momentum": self._store(shape)} if self.momentum > 0 else {}

    def delta(self, key, grad, lr, rng=None):
        return _sgd(self, key, grad, lr, rng)


@costed("update_optimizer", count=lambda a, out: (SGD_MOMENTUM_OPS if a.opt.momentum > 0 else SGD_OPS) * a.grad.size)
def _sgd(opt, key, grad, lr, rng):
    g = grad.astype(np.float32)
    if opt.momentum > 0:
        st = opt.stores[key]["momentum"]
        g = opt.momentum * st.load() + g
        st.store(g, rng)
    return (-lr * g).astype(np.float32)


class Adam(_Optimizer):
    """Adam (Kingma & Ba) with bias correction, as torch.optim.Adam with default betas."""

    def __init__(self, beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8, **kw):
        super().__init__(**kw)
        self.b1, self.b2, self.eps = beta1, beta2, eps
        self.t: dict = {}

    def register(self, key, shape) -> None:
        self.stores[key] = {"m": self._store(shape), "sqrt_v": self._store(shape, signed=False)}
        self.t[key] = 0

    def delta(self, key, grad, lr, rng=None):
        return _adam(self, key, grad, lr, rng)

    def _extra_state(self) -> dict:
        return {"t": dict(self.t)}

    def _load_extra(self, d) -> None:
        self.t = {k: int(v) for k, v in d["t"].items()}


def _python_scalars(*xs) -> bool:
    """Every one is a Python float or int: numpy then computes with it in float32 against a float32 array
    (a "weak" scalar), which is what the fused kernels do."""
    return all(type(x) in (float, int) for x in xs)


@costed("update_optimizer", count=lambda a, out: ADAM_OPS * a.grad.size)
def _adam(opt, key, grad, lr, rng):
    t = opt.t[key] + 1
    opt.t[key] = t
    st = opt.stores[key]
    g = np.ascontiguousarray(grad, dtype=np.float32)
    # Every step, the first included, reads the stored moments, as a core in its steady state does: the
    # stores start at exact zero, so step 1's moments are (1 - b1) g and (1 - b2) g^2 bit for bit, and
    # its loads (and their dequantisation) are costed like any later step's.
    s = st["sqrt_v"].load()
    m_old = st["m"].load()
    if _python_scalars(opt.b1, opt.b2, opt.eps, lr) and s.shape == m_old.shape == g.shape:
        # the expressions below, fused: one pass for the moments, one for the step (kernels.update)
        m, v, sqrt_v, out = (np.empty(g.shape, np.float32) for _ in range(4))
        f32 = np.float32
        adam_moments(g.reshape(-1), np.ascontiguousarray(m_old).reshape(-1), np.ascontiguousarray(s).reshape(-1),
                     f32(opt.b1), f32(1 - opt.b1), f32(opt.b2), f32(1 - opt.b2), m.reshape(-1), v.reshape(-1),
                     sqrt_v.reshape(-1))
        st["m"].store(m, rng)
        st["sqrt_v"].store(sqrt_v, rng)
        adam_step(m.reshape(-1), v.reshape(-1), f32(1 - opt.b1 ** t), f32(1 - opt.b2 ** t), f32(-lr), f32(opt.eps),
                  out.reshape(-1))
        return out
    m = opt.b1 * m_old + (1 - opt.b1) * g
    v = opt.b2 * s * s + (1 - opt.b2) * g * g
    st["m"].store(m, rng)
    st["sqrt_v"].store(np.sqrt(v), rng)
    mhat = m / (1 - opt.b1 ** t)
    vhat = v / (1 - opt.b2 ** t)
    return (-lr * mhat / (np.sqrt(vhat) + opt.eps)).astype(np.float32)


def make_optimizer(name: str, momentum: float, bits: int = 32, rounding: str = "nearest",
                   scale_mode: str = "float"):
    kw = dict(bits=bits, rounding=rounding, scale_mode=scale_mode)
    if name == "adam":
        return Adam(**kw)
    if name == "sgd":
        return SGD(momentum, **kw)
    raise ValueError(f"unknown optimizer {name!r}; allowed: adam, sgd")
