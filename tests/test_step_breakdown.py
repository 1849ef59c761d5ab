"""benchmarks/step_breakdown.py times the engine from outside: it must not change what the engine computes,
must put its wrappers back, and its exclusive times must add up to no more than the step."""
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from step_breakdown import BN, GEMM, MOVE, ORDER, QUANT, REST, StepProfile, breakdown  # noqa: E402

from chipsim import kernels as K  # noqa: E402
from chipsim.config import load_config  # noqa: E402
from chipsim.data import load_dataset  # noqa: E402
from chipsim.engine.layers import block  # noqa: E402
from chipsim.engine.training.trainer import Trainer  # noqa: E402
from chipsim.experiments.sweep import weights_digest  # noqa: E402
from chipsim.kernels import conv, dense, exact  # noqa: E402


def _trainer():
    cfg = load_config(str(REPO / "hwconfigs" / "44core_4bit.yaml"), ("workload.rule=df-r",))
    data = load_dataset("mnist5k", train_limit=64, test_limit=10, seed=0)
    return Trainer(cfg.hw, cfg.model, data), data


def _two_steps(trainer, data):
    for i in range(2):
        trainer.train_step(data.x_train[32 * i:32 * (i + 1)], data.y_train[32 * i:32 * (i + 1)])


def test_profiled_steps_train_the_same_network_and_the_wrappers_come_off():
    originals = (exact._matmul, conv._matmul, dense._matmul, K.conv2d_forward, block.quantize_signed,
                 block.QuantBlock.__dict__["forward"])
    plain, data = _trainer()
    _two_steps(plain, data)
    timed, _ = _trainer()
    with StepProfile() as prof:
        assert conv._matmul is not originals[1] and block.quantize_signed is not originals[4]
        _two_steps(timed, data)
    assert weights_digest(timed.net) == weights_digest(plain.net)
    assert (exact._matmul, conv._matmul, dense._matmul, K.conv2d_forward, block.quantize_signed,
            block.QuantBlock.__dict__["forward"]) == originals
    assert all(prof.seconds[k] > 0 for k in (GEMM, MOVE, QUANT, BN))


def test_the_parts_add_up_to_the_step():
    trainer, data = _trainer()
    parts = breakdown(lambda: _two_steps(trainer, data), 1)
    assert set(parts) == set(ORDER) | {"step", "functions"}
    assert sum(parts["functions"].values()) == pytest.approx(sum(parts[k] for k in ORDER if k != REST))
    assert all(parts[k] >= 0 for k in ORDER if k != REST)
    # exclusive times never count a nested call twice, so what they cover fits inside the step's wall time
    assert sum(parts[k] for k in ORDER if k != REST) <= parts["step"] and parts[REST] >= 0
