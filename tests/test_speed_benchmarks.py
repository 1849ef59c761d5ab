"""The speed benchmarks that docs/performance.md quotes run, and measure what they say they measure.

Not timings (a test asserts no speed): that ``conv_parts.py`` times the pieces of the path the engine
takes, that the torch side runs on the threads asked, and that ``ab_checkouts.py`` refuses what is not a checkout and, given one twice, runs both of its
modes to the end (the same code on both sides must train the same weights).
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench(*args, timeout=300):
    return subprocess.run([sys.executable, str(REPO / "benchmarks" / args[0]), *args[1:]], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_conv_parts_times_the_pieces_of_the_engines_path():
    from chipsim.kernels import conv_direct
    r = _bench("conv_parts.py", "--batch", "4")
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.count("whole, as the engine calls them") == 3
    if conv_direct.in_use():          # the direct conv's pieces where it runs; the GEMM's pieces always
        assert "forward      convolution" in out and "int8-direct/int8/int8-direct" in out
    assert "weight grad  GEMM (torch._int_mm)" in out or "float" in out
    assert out.count("the products and their weight packing alone") == 3       # each layer's floor


def test_the_torch_side_runs_on_the_threads_asked():
    """numba's threading layer resets OpenMP's thread count in torch's libgomp when it starts: after
    ``pin_torch_threads(1)`` torch stays on 1 thread, and a torch step asked for 1 refuses to run on 2.
    In a fresh process, so the suite's own thread settings are not touched."""
    code = (
        "import sys; sys.path.insert(0, 'benchmarks')\n"
        "import numpy as np, numba, torch\n"
        "from rounds import pin_torch_threads\n"
        "from kernels import torch_step\n"
        "pin_torch_threads(1)\n"
        "numba.get_num_threads()\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
        "step = torch_step(2, 2, 5, 5, 3, np.random.default_rng(0), threads=1)\n"
        "step()\n"
        "torch.set_num_threads(2)\n"
        "try:\n"
        "    step()\n"
        "except RuntimeError as e:\n"
        "    print('refused:', e)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "refused: torch runs on 2 threads, not 1" in r.stdout


def test_ab_checkouts_refuses_a_directory_that_is_not_a_checkout(tmp_path):
    r = _bench("ab_checkouts.py", str(tmp_path), str(REPO), "step")
    assert r.returncode == 2 and "not a chipsim checkout" in r.stderr


@pytest.mark.parametrize("mode, args", [("step", ["--rule", "cwc", "--rounds", "2", "--steps", "1"]),
                                        ("run", ["--rounds", "1", "--set", "training.epochs=1",
                                                 "--set", "workload.train_limit=64", "--set", "workload.test_limit=64"])])
def test_ab_checkouts_runs_the_same_checkout_on_both_sides(mode, args):
    r = _bench("ab_checkouts.py", str(REPO), str(REPO), mode, *args)
    assert r.returncode == 0, r.stderr
    if mode == "step":
        assert "cwc step: A" in r.stdout and "of 2 rounds" in r.stdout
    else:
        assert "the same arrays, bit for bit" in r.stdout
