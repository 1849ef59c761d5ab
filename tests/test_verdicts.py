"""The verdict gate (chipsim.experiments.verdicts) and the report writers that go through it, on synthetic
inputs: one seed, a zero spread, overlapping spreads, a clear difference, and the smoke scale."""
from __future__ import annotations

from chipsim.experiments import rule_table, vit_table
from chipsim.experiments.reproduce import PLANS
from chipsim.experiments.reproduce_report import (_bits_section, _negatives_section, _robust_verdict,
                                                  scale_of)
from chipsim.experiments.verdicts import FAILS, HOLDS, NOT_JUDGED, SMOKE, Gap, Scale, ranked, verdict

FULL = Scale("mnist5k, 4000 images, 3 epochs, 3 seeds")
VERDICTS = (HOLDS, FAILS)


def judged(text: str) -> bool:
    return any(v in text for v in VERDICTS)


def test_one_seed_is_never_judged():
    text = verdict(True, "A beats B by 20 points.", scale=FULL, seeds=1, gaps=(Gap(0.20, 0.0),))
    assert text.startswith(NOT_JUDGED) and "1 seed" in text and not judged(text)
    assert "A beats B by 20 points." in text          # the numbers are still stated


def test_zero_spread_from_one_seed_is_not_a_spread_but_from_three_it_is():
    assert NOT_JUDGED in verdict(True, "x", scale=FULL, seeds=1, gaps=(Gap(0.05, 0.0),))
    # three seeds that all agree: a 5-point difference is larger than their (zero) spread
    assert verdict(True, "x", scale=FULL, seeds=3, gaps=(Gap(0.05, 0.0),)).startswith(HOLDS)
    # a zero difference is never "larger than its spread", even a zero spread
    assert NOT_JUDGED in verdict(False, "x", scale=FULL, seeds=3, gaps=(Gap(0.0, 0.0),))


def test_overlapping_spreads_are_not_judged_a_clear_difference_is():
    # difference 0.01 (1 point) against a spread of 0.02 (2 points): within the noise
    assert NOT_JUDGED in verdict(True, "x", scale=FULL, seeds=3, gaps=(Gap(0.01, 0.02),))
    # one of two differences within its spread is enough to withhold the verdict
    assert NOT_JUDGED in verdict(True, "x", scale=FULL, seeds=3, gaps=(Gap(0.10, 0.01), Gap(-0.01, 0.03)))
    clear = verdict(False, "x", scale=FULL, seeds=3, gaps=(Gap(-0.05, 0.01),))
    assert clear.startswith(FAILS) and "(mnist5k, 4000 images, 3 epochs, 3 seeds)" in clear   # the scale is named
    assert verdict(True, "x", scale=FULL, seeds=2, gaps=(Gap(0.05, 0.01),)).startswith(HOLDS)


def test_smoke_scale_judges_nothing_not_even_exact_costs():
    for seeds, gaps, exact in ((3, (Gap(0.5, 0.0),), False), (0, (), True)):
        assert verdict(True, "x", scale=SMOKE, seeds=seeds, gaps=gaps, exact=exact).startswith(NOT_JUDGED)
    # an exact chip cost needs no seeds at a real scale
    assert verdict(True, "x", scale=FULL, exact=True).startswith(HOLDS)


def test_ranked_names_a_winner_only_past_the_spread():
    def rank(rows, scale=FULL):
        return ranked(rows, lambda r: r[1], lambda r: r[2], lambda r: r[3], lambda r: r[0], scale)
    assert rank([("a", 0.9, 0.01, 3), ("b", 0.8, 0.01, 3)])[0][0] == "a"
    best, why = rank([("a", 0.9, 0.05, 3), ("b", 0.88, 0.01, 3)])      # 2 points apart, spread 5
    assert best is None and "a and b are not told apart" in why
    assert rank([("a", 0.9, 0.0, 1), ("b", 0.5, 0.0, 1)])[0] is None   # one seed
    assert rank([("a", 0.9, 0.0, 3), ("b", 0.5, 0.0, 3)], SMOKE)[0] is None


def test_quick_plan_is_a_smoke_scale_and_full_is_not():
    assert not scale_of(PLANS["quick"]).judge and scale_of(PLANS["full"]).judge
    assert "3 seeds" in scale_of(PLANS["full"]).text


def _rule_rows(accs: dict, model_of=None):
    rows = []
    for name, acc in accs.items():
        m = sum(acc) / len(acc)
        sd = (sum((a - m) ** 2 for a in acc) / (len(acc) - 1)) ** 0.5 if len(acc) > 1 else 0.0
        rows.append({"variant": name, "model": (model_of or {}).get(name, "cnn_small"), "paper": None,
                     "accuracy_mean": m, "accuracy_std": sd, "accuracy": acc, "head_accuracy_mean": None,
                     "total_peak_bytes": {"bp": 100 * 1024, "cwc": 9 * 1024}.get(name, 50 * 1024),
                     "whole_batch_bytes": 1024, "latency_us": 10.0, "energy_per_sample_pj": 1e6, "inference": {}})
    return rows


def test_rule_table_says_most_accurate_only_when_the_seeds_tell():
    one_seed = {"seeds": [0], "scale": [], "rows": _rule_rows({"bp": [0.5], "ff": [0.49]})}
    text = "\n".join(rule_table.markdown(one_seed))
    assert "Most accurate: not judged at this scale" in text and "highest mean: bp" in text
    clear = {"seeds": [0, 1, 2], "scale": [], "rows": _rule_rows({"bp": [0.90, 0.91, 0.92], "ff": [0.5, 0.52, 0.51]})}
    assert "Most accurate: bp (91.0%)" in "\n".join(rule_table.markdown(clear))


def test_rule_table_ratios_compare_like_with_like():
    t = {"seeds": [0, 1], "scale": [], "rows": _rule_rows({"bp": [0.9, 0.9], "df-o": [0.8, 0.8], "cwc": [0.7, 0.7]},
                                                          {"cwc": "cwc_mnist"})}
    text = "\n".join(rule_table.markdown(t))
    # cwc runs another model: it is not "least SRAM ... x BP", it gets its own line naming its model
    assert "least SRAM: df-o (50 KiB, 0.50x BP)" in text
    assert "cwc 0.09" not in text and "On `cwc_mnist` (no BP run on it): cwc 9 KiB SRAM" in text
    assert "| cwc | cwc_mnist |" in text


def _sweep_curve(rule_points: dict, axis: str, seeds):
    return {"seeds": list(seeds), "curves": {axis: rule_points}}


def test_bits_and_negatives_sections_withhold_verdicts_on_one_seed():
    bits = _sweep_curve({"df-o": [(32, 0.90, 0.0), (4, 0.80, 0.0)], "bp": []}, "bits", [0])
    text = "\n".join(_bits_section({"bits": bits}, FULL))
    assert "4-bit still works" in text and NOT_JUDGED in text and not judged(text)
    bits3 = _sweep_curve({"df-o": [(32, 0.90, 0.01), (4, 0.80, 0.01)], "bp": []}, "bits", [0, 1, 2])
    assert FAILS in "\n".join(_bits_section({"bits": bits3}, FULL))      # 10 points lost, spread 1
    neg = _sweep_curve({"df-o": [(1, 0.8, 0.01), (9, 0.9, 0.01), ("avg", 0.7, 0.01)]}, "negatives", [0, 1, 2])
    assert HOLDS in "\n".join(_negatives_section({"negatives": neg}, FULL))
    assert NOT_JUDGED in "\n".join(_negatives_section({"negatives": neg}, SMOKE))


def test_robustness_verdict_with_zero_spread_from_one_seed_is_not_judged():
    # one seed: DF-O ahead by 10 points at every level, spread 0.0 -- the case issue 26 reported
    bp = {lv: (0.5, 0.0) for lv in (3, 4, 5)}
    dfo = {lv: (0.6, 0.0) for lv in (3, 4, 5)}
    dbp = {lv: (-0.2, 0.0, [-0.2]) for lv in (3, 4, 5)}
    ddf = {lv: (-0.1, 0.0, [-0.1]) for lv in (3, 4, 5)}
    text = _robust_verdict("shot", [3, 4, 5], bp, dfo, dbp, ddf, FULL, seeds=1)
    assert NOT_JUDGED in text and not judged(text)
    dbp3 = {lv: (-0.2, 0.01, [-0.21, -0.2, -0.19]) for lv in (3, 4, 5)}
    ddf3 = {lv: (-0.1, 0.01, [-0.11, -0.1, -0.09]) for lv in (3, 4, 5)}
    bp3 = {lv: (0.5, 0.01) for lv in (3, 4, 5)}
    dfo3 = {lv: (0.6, 0.01) for lv in (3, 4, 5)}
    assert HOLDS in _robust_verdict("shot", [3, 4, 5], bp3, dfo3, dbp3, ddf3, FULL, seeds=3)


def test_vit_findings_are_gated():
    def row(name, acc):
        return {"variant": name, "paper": 80.0, "accuracy_mean": sum(acc) / len(acc),
                "accuracy_std": 0.0 if len(acc) == 1 else 0.01, "accuracy": acc, "per_epoch_mean": [0.5, 0.6],
                "epochs_to_converge": 2, "total_peak_bytes": 1.0, "latency_us": 1.0, "energy_step_pj": 1.0,
                "inference": {}}
    rows = {n: row(n, [a]) for n, a in (("cff", 0.6), ("cff+m", 0.62), ("ff", 0.5), ("bp", 0.7))}
    text = "\n".join(vit_table.findings(rows, FULL, seeds=1))
    assert not judged(text) and text.count(NOT_JUDGED) == 3 and "reproduced" not in text
