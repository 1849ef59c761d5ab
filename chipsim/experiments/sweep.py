"""``chipsim sweep``: accuracy against noise level, bit width or number of negatives.

The unit of work is one *training* (a rule, a seed and whatever changes
training: a device-mismatch level, a bit width, a number of negatives). Each
trained network is then tested under every test-time corruption asked for
(shot, impulse, weight read noise, stuck-at faults) at every level, which is
cheap. Trainings run in parallel processes and stream to ``points.jsonl``, so
an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import os
import time

import numpy as np

from ..config import LoadedConfig, load_config
from ..errors import ConfigError
from ..noise import KINDS, LEVELS, NoiseSpec
from ..report import atomic_write, write_json
from .jobs import limit_threads, run_points, threads_per_job

TEST_TIME = ("shot", "impulse", "read", "stuck")
ALL_BITS = (32, 8, 6, 4, 3, 2)


def parse_levels(text: str) -> list:
    """'0-5' or '0,2,5' -> [levels]; validated against 0..5."""
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            levels = list(range(int(a), int(b) + 1))
        else:
            levels = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--levels {text!r}: expected a range like 0-5 or a list like 0,3,5") from None
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ConfigError(f"--levels {text!r}: levels must be within 0-5")
    return levels


def _bits_overrides(bits: int) -> list:
    """A bit-width point sets weights, activations and errors to ``bits`` (master weights stay wider)."""
    g = max(bits, 8) if bits != 32 else 32
    return [f"precision.weight_bits={bits}", f"precision.activation_bits={bits}", f"precision.gradient_bits={g}",
            f"precision.update_bits={32 if bits == 32 else 16}"]


def _train_point(p: dict) -> dict:
    """Train once and evaluate under every requested test-time noise; runs in a worker process."""
    limit_threads(p["threads"])
    from ..data import load_dataset
    from ..engine.trainer import Trainer
    from ..noise import corrupt_inputs, gradient_noise, perturbed_weights
    cfg = load_config(p["config"], tuple(p["overrides"]))
    _check_noise_on_model(cfg, p)
    hw, wl = cfg.hw, cfg.hw.workload
    data = load_dataset(wl.dataset, root=wl.data_root, download=wl.download, train_limit=wl.train_limit,
                        test_limit=wl.test_limit, seed=0)
    hook = None
    if p.get("mismatch_level"):
        spec = NoiseSpec("mismatch", p["mismatch_level"], data.kind, seed=hw.training.seed,
                         gain_std=p.get("gain_std", 0.0))
        hook = gradient_noise(spec, _slices(cfg))
    t0 = time.perf_counter()
    trainer = Trainer(hw, cfg.model, data, grad_noise=hook)
    trainer.run(progress=False)
    acc = {}
    clean = trainer.evaluate(data.x_test, data.y_test)
    acc["clean"] = clean["accuracy"]
    for kind in p["test_noises"]:
        for level in p["levels"]:
            spec = NoiseSpec(kind, level, data.kind, seed=hw.training.seed)
            x = corrupt_inputs(data.x_test, spec)
            with perturbed_weights(trainer.net, spec):
                acc[f"{kind}:{level}"] = trainer.evaluate(x, data.y_test)["accuracy"]
    return {"accuracy": acc, "per_block": clean["per_block"], "seconds": time.perf_counter() - t0,
            "train_samples": int(len(data.y_train)), "test_samples": int(len(data.y_test)),
            "data_kind": data.kind}


def _check_noise_on_model(cfg, p) -> None:
    """Weight and gradient noise act on a conv/dense block's weight codes and gradient; a vit model's
    layers hold many tensors each, which these models do not cover (input noise applies to any model)."""
    kinds = set(p["test_noises"]) | ({"mismatch"} if p.get("mismatch_level") else set())
    bad = sorted(kinds & {"read", "stuck", "mismatch"})
    if cfg.model.is_transformer and bad:
        from ..errors import ConfigError
        raise ConfigError(f"--noise {','.join(bad)}: weight and gradient noise apply to conv/dense models; "
                          f"{cfg.model.name} is a vit model (input noise shot, impulse applies to it)")


def _slices(cfg) -> dict:
    """layer -> [(lo, hi)] unit ranges per core, from the chip mapping of this config."""
    from ..chip import map_trace
    from ..runner import trace_one_step
    m = map_trace(trace_one_step(cfg), cfg.hw)
    return {layer.index: [(s.lo, s.hi) for s in m.slices_of(layer.index)] for layer in m.layers}


def sweep(config, rules=("bp", "df-o"), noise=(), levels=(0, 1, 2, 3, 4, 5), bits=(), negatives=(),
          seeds=(0,), overrides=(), out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
          gain_std: float = 0.0) -> dict:
    """Run the sweep; writes sweep.json, sweep.md and plots into ``out_dir``; returns the table.

    Exactly one of ``noise`` (kinds), ``bits`` or ``negatives`` is usually
    given; they may be combined. ``negatives`` items are ints or ``"avg"``
    (the paper's ablation: N = classes-1 averaged instead of max).
    """
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    for kind in noise:
        if kind not in KINDS:
            raise ConfigError(f"--noise: {kind!r} is not a noise kind; allowed: {', '.join(KINDS)}")
    for b in bits:
        if b not in ALL_BITS:
            raise ConfigError(f"--bits: {b} is not allowed; allowed: {', '.join(map(str, ALL_BITS))}")
    if not (noise or bits or negatives):
        raise ConfigError("sweep: give --noise KINDS, --bits WIDTHS or --negatives LIST")
    out_dir = out_dir or os.path.join("reports", "runs", f"{cfg.name}-sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    jobs = jobs or os.cpu_count() or 1
    base = list(cfg.overrides)
    test_noises = [k for k in noise if k in TEST_TIME]
    points = []

    def add(key, rule, seed, extra, **kw):
        points.append({"key": key, "rule": rule, "seed": seed, "config": cfg.path,
                       "overrides": base + [f"workload.rule={rule}", f"training.seed={seed}"] + extra,
                       "test_noises": kw.pop("test_noises", []), "levels": kw.pop("levels", []),
                       "threads": threads_per_job(jobs), **kw})

    for rule in rules:
        for seed in seeds:
            if test_noises or "mismatch" in noise:
                add(f"{rule}-s{seed}-clean", rule, seed, [], test_noises=test_noises, levels=list(levels))
            if "mismatch" in noise:
                for lv in levels:
                    if lv:
                        add(f"{rule}-s{seed}-mismatch{lv}", rule, seed, [], mismatch_level=lv, gain_std=gain_std)
            for b in bits:
                add(f"{rule}-s{seed}-bits{b}", rule, seed, _bits_overrides(b), bits=b)
            for n in negatives:
                extra = ["learning.negative_reduce=avg"] if n == "avg" else [f"learning.negatives={n}"]
                add(f"{rule}-s{seed}-neg{n}", rule, seed, extra, negatives=n)
    results = run_points(_train_point, points, out_dir, jobs=jobs, progress=progress, desc="sweep")
    table = {"config": cfg.path, "rules": list(rules), "noise": list(noise), "levels": list(levels),
             "bits": list(bits), "negatives": list(negatives), "seeds": list(seeds), "overrides": base,
             "noise_parameters": {k: [NoiseSpec(k, lv, _data_kind(results)).parameters() for lv in levels]
                                  for k in noise},
             "points": [results[p["key"]] for p in points]}
    table["curves"] = curves(table)
    write_json(os.path.join(out_dir, "sweep.json"), table)
    atomic_write(os.path.join(out_dir, "sweep.md"), markdown(table))
    plot(table, out_dir)
    return table


def _data_kind(results) -> str:
    for r in results.values():
        return r.get("data_kind", "mnist-like")
    return "mnist-like"


def _stat(values):
    v = np.asarray(values, float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def curves(table: dict) -> dict:
    """name -> {rule -> [(x, mean accuracy, std over seeds)]} for every swept axis."""
    out = {}
    pts = table["points"]
    for kind in table["noise"]:
        per_rule = {}
        for rule in table["rules"]:
            row = []
            for lv in table["levels"]:
                if kind == "mismatch":
                    key = "clean" if lv == 0 else None
                    vals = [p["accuracy"]["clean"] for p in pts if p["point"]["rule"] == rule and (
                        (lv == 0 and p["key"].endswith("-clean")) or p["point"].get("mismatch_level") == lv)]
                else:
                    vals = [p["accuracy"][f"{kind}:{lv}"] for p in pts
                            if p["point"]["rule"] == rule and p["key"].endswith("-clean")]
                if vals:
                    row.append((lv, *_stat(vals)))
            per_rule[rule] = row
        out[f"noise:{kind}"] = per_rule
    for axis, field in (("bits", "bits"), ("negatives", "negatives")):
        if table[axis]:
            out[axis] = {rule: [(x, *_stat([p["accuracy"]["clean"] for p in pts if p["point"]["rule"] == rule
                                            and p["point"].get(field) == x])) for x in table[axis]]
                         for rule in table["rules"]}
    return out


def markdown(table: dict) -> str:
    seeds = table["seeds"]
    lines = ["# Sweep", "", f"Config `{table['config']}`, rules {', '.join(table['rules'])}, seeds {seeds} "
             f"(mean ± std over seeds where more than one).", ""]
    for name, per_rule in table["curves"].items():
        xs = sorted({x for rows in per_rule.values() for x, *_ in rows}, key=str)
        lines += [f"## Test accuracy vs {name.replace('noise:', '')} {'level' if name.startswith('noise') else ''}",
                  "", "| rule | " + " | ".join(f"{'L' if name.startswith('noise') else ''}{x}" for x in xs) + " |",
                  "|---|" + "---|" * len(xs)]
        for rule, rows in per_rule.items():
            cell = {x: f"{100 * m:.1f}" + (f" ± {100 * s:.1f}" if len(seeds) > 1 else "") for x, m, s in rows}
            lines.append(f"| {rule} | " + " | ".join(cell.get(x, "") for x in xs) + " |")
        lines.append("")
    if table["noise_parameters"]:
        lines += ["## Noise parameters", ""]
        for kind, params in table["noise_parameters"].items():
            lines.append(f"- `{kind}`: " + "; ".join(
                f"L{p['level']}: " + ", ".join(f"{k}={v}" for k, v in p.items() if k not in ("kind", "level"))
                for p in params))
    return "\n".join(lines) + "\n"


def plot(table: dict, out_dir: str) -> None:
    from .. import plots
    for name, per_rule in table["curves"].items():
        series = {r: ([x for x, *_ in rows], [100 * m for _, m, _ in rows]) for r, rows in per_rule.items()}
        errors = {r: [100 * s for *_, s in rows] for r, rows in per_rule.items()} if len(table["seeds"]) > 1 else None
        if name.startswith("noise:"):
            kind = name.split(":", 1)[1]
            plots.lines(series, f"{kind} noise level", "test accuracy (%)",
                        os.path.join(out_dir, f"accuracy_vs_{kind}.png"), f"Accuracy under {kind} noise",
                        errors=errors, xticks=table["levels"])
        elif name == "bits":
            series = {r: ([str(x) for x in xs], ys) for r, (xs, ys) in series.items()}
            plots.lines(series, "bit width (weights = activations)", "test accuracy (%)",
                        os.path.join(out_dir, "accuracy_vs_bits.png"), "Accuracy vs bit width", errors=errors)
        else:
            series = {r: ([str(x) for x in xs], ys) for r, (xs, ys) in series.items()}
            plots.lines(series, "negatives N (avg = N=C-1 averaged)", "test accuracy (%)",
                        os.path.join(out_dir, "accuracy_vs_negatives.png"), "Accuracy vs number of negatives",
                        errors=errors)
