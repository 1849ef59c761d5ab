"""The papers' models as presets: each loads, splits into CwC's class groups where it is meant
for CwC, and has the parameter count its comment states (counted from the engine's own blocks)."""
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from chipsim.config import Precision, load_config
from chipsim.engine.layers.head import OnePassHead
from chipsim.engine.rules.losses import check_cwc_divisible
from chipsim.engine.networks.network import Network
from chipsim.modelspec import load_model

REPO = Path(__file__).resolve().parents[1]
P8 = Precision(weight_bits=8, activation_bits=8, gradient_bits=8, update_bits=16)
# Table III of the Advancements paper: trainable parameters
PAPER = {"ff_tiny": 164_706, "ff_small": 239_266, "ff_medium": 484_506, "ff_optimal": 754_386}
KERNELS = {"ff_tiny": [3, 3, 3, 4], "ff_small": [3, 3, 3, 4], "ff_medium": [3, 3, 3, 4],
           "ff_optimal": [3, 3, 3, 4, 3]}
CHANNELS = {"ff_tiny": [50, 50, 50, 50], "ff_small": [50, 50, 70, 70], "ff_medium": [50, 50, 100, 150],
            "ff_optimal": [50, 50, 100, 160, 160]}


def stated(path, pattern):
    m = re.search(pattern, path.read_text())
    assert m, f"{path.name}: no parameter count comment matching {pattern!r}"
    return [int(g.replace(",", "")) for g in m.groups()]


def counts(model, shape, last_k=2):
    net = Network(model, shape, 10, P8, 0, with_label=False, with_head=False)
    conv = sum(int(np.prod(b.w_shape)) for b in net.blocks)
    return conv, int(np.prod(OnePassHead(net, last_k, P8, 0).layer.w_shape)), net


@pytest.mark.parametrize("name", sorted(PAPER))
def test_light_ff_models_match_table_iii(name):
    path = REPO / "models" / f"{name}.yaml"
    model = load_model(str(path))
    assert [b.kernel for b in model.blocks] == KERNELS[name]
    assert [b.channels for b in model.blocks] == CHANNELS[name]
    check_cwc_divisible(model.blocks, 10, origin=path.name)
    conv, head, _ = counts(model, (3, 32, 32))
    c, h, t, paper = stated(path, r"conv ([\d,]+) \+ head ([\d,]+) = ([\d,]+); paper ([\d,]+)")
    assert (c, h, t, paper) == (conv, head, conv + head, PAPER[name])
    assert abs(t - paper) / paper < 0.02


def test_cwc_mnist_preset():
    path = REPO / "models" / "cwc_mnist.yaml"
    model = load_model(str(path))
    check_cwc_divisible(model.blocks, 10, origin=path.name)
    conv, head, net = counts(model, (1, 28, 28))
    assert stated(path, r"conv ([\d,]+); with a one-pass head on the last two blocks \+([\d,]+)") == [conv, head]
    assert net.blocks[0].in_shape == (1, 28, 28) and net.blocks[-1].out_shape == (80, 7, 7)


def test_tff_fcn_preset():
    path = REPO / "models" / "tff_fcn.yaml"
    model = load_model(str(path))
    assert [(b.type, b.units) for b in model.blocks] == [("dense", 2048)] * 6
    mnist, cifar = stated(path, r"MNIST\): ([\d,]+);.*CIFAR-10\): ([\d,]+)")
    # weights only, as the engine's dense blocks hold them: (inputs x units) per block
    assert mnist == 2 * 28 * 28 * 2048 + 5 * 2048 * 2048
    assert cifar == 4 * 32 * 32 * 2048 + 5 * 2048 * 2048


@pytest.mark.parametrize("name", ["ff_tiny", "ff_small", "ff_medium", "ff_optimal", "cwc_mnist", "tff_fcn"])
def test_presets_validate_in_a_config(name):
    sets = [f"workload.model={REPO / 'models' / (name + '.yaml')}"]
    if name != "tff_fcn":
        sets.append("workload.rule=cwc")
    loaded = load_config(str(REPO / "hwconfigs" / "176core_512k.yaml"), sets)
    assert loaded.model.name == name


@pytest.mark.slow
def test_independent_torch_cwc_learns_the_cwc_mnist_preset():
    """benchmarks/cwc_torch.py, 1 epoch on mnist5k's 4,000 training images (the issue's setting)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import torch
    from cwc_torch import train_and_test
    from chipsim.data import load_dataset
    torch.set_num_threads(2)
    per_block, decoded = train_and_test(load_model(str(REPO / "models" / "cwc_mnist.yaml")),
                                        load_dataset("mnist5k"), epochs=1, lr=1e-2, batch=32, seed=0, last_ks=[1])
    assert decoded[1] > 0.85, (per_block, decoded)
    assert per_block[-1] > per_block[0]          # deeper blocks decode better


@pytest.mark.parametrize("name", ["tff_s", "df_cnn10"])
def test_paper_scale_cnn_presets(name):
    """TFF/s (channels from the Trifecta's code, its 2.8M parameters) and the reconstructed DF ten-layer
    CNN: the counts their comments state, from the engine's blocks with the learned label channel."""
    path = REPO / "models" / f"{name}.yaml"
    model = load_model(str(path))
    mnist, cifar = stated(path, r"MNIST\): ([\d,]+);.*CIFAR-10\): ([\d,]+)")
    got = []
    for shape in ((1, 28, 28), (3, 32, 32)):
        net = Network(model, shape, 10, P8, 0, with_label=True, with_head=False)
        got.append(sum(int(np.prod(b.w_shape)) for b in net.blocks))
    assert got == [mnist, cifar]
    assert {"tff_s": 6, "df_cnn10": 10}[name] == model.depth
    if name == "tff_s":
        assert abs(cifar - 2.8e6) / 2.8e6 < 0.01                   # the paper's "2.8 million parameters"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tff_s", "df_cnn10"])
def test_paper_scale_chip_maps_the_paper_scale_cnns(name):
    """hwconfigs/256core_4m.yaml maps both presets on CIFAR-10-shaped input, DF-R and BP (a small batch
    here to keep the test short; `chipsim map hwconfigs/256core_4m.yaml --model models/NAME.yaml` maps
    them at its batch of 64)."""
    from chipsim import api
    for rule in ("df-r", "bp"):
        r = api.map(str(REPO / "hwconfigs" / "256core_4m.yaml"),
                    [f"workload.model={REPO / 'models' / (name + '.yaml')}", f"workload.rule={rule}",
                     "training.batch_size=2"], write=False)
        assert r.chip.ledger.peak_bytes <= r.chip.ledger.capacity
