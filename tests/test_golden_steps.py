"""A refactor changes no number: every rule on every shipped model, two steps, bit for bit.

``tests/golden/steps.json`` was written by ``tests/golden/make_golden.py`` on
the code before a refactor; see ``tests/golden_cases.py`` for what a case
records. A change that is meant to alter the engine's arithmetic or the
chip's costs regenerates it and says so; a refactor must pass unchanged.
"""
import json

import pytest

from golden_cases import GOLDEN, cases, run_case

EXPECTED = json.loads(GOLDEN.read_text())
CASES = cases()


def test_golden_file_covers_every_case():
    assert sorted(EXPECTED) == sorted(f"{s}/{r}" for s, r, _ in CASES)


@pytest.mark.parametrize("stem,rule,dataset", CASES, ids=[f"{s}-{r}" for s, r, _ in CASES])
def test_two_steps_are_bit_identical_to_the_golden_run(stem, rule, dataset):
    want = EXPECTED[f"{stem}/{rule}"]
    got = run_case(stem, rule, dataset)
    assert got["trace"] == want["trace"]
    assert got["cost"] == want["cost"]
    assert got["state"] == want["state"], "weights, optimizer state or RNG streams after two steps differ"
