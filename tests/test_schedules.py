"""Learning-rate schedules against torch's own schedulers."""
from types import SimpleNamespace

import pytest
import torch

from chipsim.engine.training.schedules import cosine_lr, learning_rate, multistep_lr


def torch_lrs(make_scheduler, steps):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.01)
    sched = make_scheduler(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


@pytest.mark.parametrize("milestones, gamma", [([2, 4], 0.1), ([1, 2, 3, 5], 0.2), ([3], 0.5)])
def test_multistep_matches_torch_multisteplr_stepped_per_epoch(milestones, gamma):
    epochs, spe = 7, 5
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones, gamma), epochs)
    tr = SimpleNamespace(schedule="multistep", lr=0.01, epochs=epochs, milestones=tuple(milestones), gamma=gamma)
    for e in range(epochs):
        for s in range(spe):        # constant within an epoch, torch's value of that epoch
            assert learning_rate(tr, e * spe + s, spe) == pytest.approx(ref[e], rel=1e-12)


def test_fractional_milestones_match_multisteplr_stepped_per_step():
    spe = 8
    tr = SimpleNamespace(schedule="multistep", lr=0.01, epochs=2, milestones=(0.5, 1.25), gamma=0.1)
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [4, 10], 0.1), 2 * spe)
    ours = [learning_rate(tr, s, spe) for s in range(2 * spe)]
    assert ours == pytest.approx(ref, rel=1e-12)
    assert ours[3] == pytest.approx(0.01) and ours[4] == pytest.approx(0.001) and ours[10] == pytest.approx(1e-4)


def test_cosine_matches_cosine_annealing():
    total = 12
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=total, eta_min=0.0), total)
    assert [cosine_lr(0.01, s, total) for s in range(total)] == pytest.approx(ref, rel=1e-9, abs=1e-15)
    tr = SimpleNamespace(schedule="cosine", lr=0.01, epochs=3, milestones=(), gamma=0.1)
    assert learning_rate(tr, 5, 4) == cosine_lr(0.01, 5, 12)


def test_constant_and_unknown():
    tr = SimpleNamespace(schedule="constant", lr=0.02, epochs=3, milestones=(), gamma=0.1)
    assert learning_rate(tr, 99, 4) == 0.02
    assert multistep_lr(1.0, 0.0, (), 0.1) == 1.0
    with pytest.raises(ValueError, match="allowed: cosine, constant, multistep"):
        learning_rate(SimpleNamespace(schedule="step", lr=1.0), 0, 1)
