"""``chipsim sweep``: accuracy against noise level, bit width or number of negatives.

The unit of work is one *training* (a rule, a seed and whatever changes
training: a device-mismatch level, a bit width, a number of negatives). Each
trained network is then tested under every test-time corruption asked for
(shot, impulse, weight read noise, stuck-at faults) at every level, which is
cheap. Trainings run in parallel processes and stream to ``points.jsonl``, so
an interrupted sweep resumes where it stopped.
"""
from __future__ import annotations

import hashlib
import os
import time

import numpy as np

from .. import provenance, rundir
from ..config import LoadedConfig, load_config
from ..errors import ConfigError, OutputError, interrupt_of
from ..noise import KINDS, LEVELS, NoiseSpec
from ..report import atomic_write, write_json
from ..styles import numeric_order
from . import args as check
from .. import labels
from .cluster import check_cluster
from .jobs import RESULTS_NAME, limit_threads, number, run_points, threads_per_job
from .keys import point_key

TEST_TIME = ("shot", "impulse", "read", "stuck")
ALL_BITS = (32, 8, 6, 4, 3, 2)


def parse_levels(text: str) -> list:
    """'0-5' or '0,2,5' -> [levels]; validated against 0..5."""
    from ..safe_yaml import clip
    shown = clip(repr(text), 40)
    try:
        if "-" in text:
            a, b = text.split("-", 1)
            lo, hi = int(a), int(b)
            if lo > hi:
                raise ConfigError(f"--levels {shown}: the range runs backwards; write it low-high, e.g. 0-5")
            if lo not in LEVELS or hi not in LEVELS:
                raise ConfigError(f"--levels {shown}: levels must be within 0-5")
            levels = list(range(lo, hi + 1))
        else:
            levels = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise ConfigError(f"--levels {shown}: expected a range like 0-5 or a list like 0,3,5") from None
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise ConfigError(f"--levels {shown}: levels must be within 0-5")
    if len(set(levels)) != len(levels):
        raise ConfigError(f"--levels {shown}: a level is given twice; give each once")
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
    from ..engine.training.trainer import Trainer
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
            "data_kind": data.kind, "weights_sha256": weights_digest(trainer.net)}


def check_result(p: dict, r: dict) -> None:
    """A logged training has what the tables read: every accuracy the point asks for, in [0, 1]."""
    acc = r["accuracy"]
    for name in ["clean"] + [f"{k}:{lv}" for k in p["test_noises"] for lv in p["levels"]]:
        number(acc[name], 0, 1)
    for a in r.get("per_block") or []:
        number(a, 0, 1)
    number(r["seconds"], 0)
    if not isinstance(r.get("data_kind", ""), str):
        raise TypeError("data_kind is not text")


def weights_digest(net) -> str:
    """SHA-256 of every trained number (master weights, BN running statistics, label embedding).

    Accuracy on a small test set can agree while the weights differ; equal
    digests show that two runs of a point (in this process, the local pool or
    a Dask worker) trained the very same network.
    """
    h = hashlib.sha256()
    for layer in net.layers():
        for a in (layer.master.value, layer.running_mean, layer.running_var):
            h.update(np.ascontiguousarray(a).tobytes())
    if net.embedding is not None:
        h.update(np.ascontiguousarray(net.embedding.value).tobytes())
    return h.hexdigest()


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


def _scale(cfg: LoadedConfig, bits=(), negatives=()) -> dict:
    """The training scale every point shares (each point may change rule, seed, bits or negatives), and
    the chip, dataflow and mapping it is costed on (``labels``). A swept setting says so instead of
    naming the base config's value: a bit-width sweep's 32-bit point is not W4/A4."""
    hw = cfg.hw
    n = hw.learning.negatives
    precision = ("W = A = the point's bit width, G = max(width, 8), U16 (32 bits: all float32)" if bits
                 else labels.precision_words(hw.precision))
    words = labels.settings(cfg, precision=precision)
    if negatives:
        words["negatives"] = "the point's N"
    return {"train_limit": hw.workload.train_limit, "test_limit": hw.workload.test_limit,
            "epochs": hw.training.epochs, "batch_size": hw.training.batch_size, "dataset": hw.workload.dataset,
            "model": cfg.model.name, "negatives": "classes - 1" if n is None else n,
            "precision": precision, "settings": words}


def _check_arguments(rules, noise, levels, bits, negatives, seeds, gain_std):
    rules = check.rules(rules)
    for kind in noise:
        if kind not in KINDS:
            raise ConfigError(f"--noise: {kind!r} is not a noise kind; allowed: {', '.join(KINDS)}")
    for b in bits:
        if b not in ALL_BITS:
            raise ConfigError(f"--bits: {b!r} is not allowed; allowed: {', '.join(map(str, ALL_BITS))}")
    for n in negatives:
        if n != "avg" and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ConfigError(f"--negatives: {n!r} is not allowed; give integers >= 1 or avg")
    if not (noise or bits or negatives):
        raise ConfigError("sweep: give --noise KINDS, --bits WIDTHS or --negatives LIST")
    if noise:
        check.integers(levels, "--levels", 0, "level", hi=5)
    check.integers(seeds, "--seeds", 0, "seed")
    for name, values in (("--noise", noise), ("--bits", bits), ("--negatives", negatives), ("--seeds", seeds)):
        if len(set(values)) != len(values):
            raise ConfigError(f"{name}: a value is given twice; give each once")
    return rules, check.finite_nonnegative(gain_std, "--gain-std")


def sweep(config, rules=("bp", "df-o"), noise=(), levels=(0, 1, 2, 3, 4, 5), bits=(), negatives=(),
          seeds=(0,), overrides=(), out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
          gain_std: float = 0.0, cluster=None) -> dict:
    """Run the sweep; writes sweep.json, sweep.md and plots into ``out_dir``; returns the table.

    Exactly one of ``noise`` (kinds), ``bits`` or ``negatives`` is usually
    given; they may be combined. ``negatives`` items are ints or ``"avg"``
    (the paper's ablation: N = classes-1 averaged instead of max). A rerun
    into the same ``out_dir`` reuses the points whose settings are unchanged
    (``keys.point_key``) and trains the others. ``cluster``: run the trainings on a Dask cluster
    (``jobs.run_points``).
    """
    check_cluster(cluster)
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    rules, gain_std = _check_arguments(rules, noise, levels, bits, negatives, seeds, gain_std)
    jobs = check.jobs(jobs) or os.cpu_count() or 1
    base = list(cfg.overrides)
    test_noises = [k for k in noise if k in TEST_TIME]
    points = []

    def add(label, kind, rule, seed, extra, **kw):
        over = base + [f"workload.rule={rule}", f"training.seed={seed}"] + extra
        params = {"test_noises": kw.pop("test_noises", []), "levels": kw.pop("levels", []), **kw}
        pcfg = load_config(cfg.path, tuple(over))          # each point's settings are valid before any training
        points.append({"key": point_key(label, pcfg, kind=kind, **params), "kind": kind, "rule": rule,
                       "seed": seed, "config": cfg.path, "overrides": over, "threads": threads_per_job(jobs),
                       **params})

    for rule in rules:
        for seed in seeds:
            if test_noises or "mismatch" in noise:
                add(f"{rule}-s{seed}-clean", "clean", rule, seed, [], test_noises=test_noises, levels=list(levels))
            if "mismatch" in noise:
                for lv in levels:
                    if lv:
                        add(f"{rule}-s{seed}-mismatch{lv}", "mismatch", rule, seed, [], mismatch_level=lv,
                            gain_std=gain_std)
            for b in bits:
                add(f"{rule}-s{seed}-bits{b}", "bits", rule, seed, _bits_overrides(b), bits=b)
            for n in negatives:
                extra = ["learning.negative_reduce=avg"] if n == "avg" else [f"learning.negatives={n}"]
                add(f"{rule}-s{seed}-neg{n}", "negatives", rule, seed, extra, negatives=n)
    with rundir.claimed(out_dir, cfg.name, "sweep", reusable_marker=RESULTS_NAME) as out_dir:
        scale = _scale(cfg, bits, negatives)
        if progress:
            print(f"chipsim sweep: {len(points)} training(s) of {', '.join(rules)} on {scale['model']}, "
                  f"{scale['dataset']} (train_limit {scale['train_limit'] or 'all'}, {scale['epochs']} epoch(s)), "
                  f"seeds {', '.join(map(str, seeds))}"
                  + (f"; overrides: {' '.join(base)}" if base else "") + f"; writing {out_dir}{os.sep}", flush=True)
        try:
            results = run_points(_train_point, points, out_dir, jobs=jobs, progress=progress, desc="sweep",
                                  cluster=cluster, check=check_result)
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot write {RESULTS_NAME}: {exc.strerror or exc}") from None
        except (KeyboardInterrupt, SystemError) as exc:
            interrupt = interrupt_of(exc)
            if interrupt is None:
                raise
            interrupt.resume_hint = f"finished trainings are in {os.path.join(out_dir, RESULTS_NAME)}; rerun the " \
                              f"same command with --out {out_dir} to continue"
            raise interrupt from None
        table = {"config": cfg.path, "rules": list(rules), "noise": list(noise), "levels": list(levels),
                 "bits": list(bits), "negatives": list(negatives), "seeds": list(seeds), "overrides": base,
                 "scale": scale,
                 "noise_parameters": {k: [NoiseSpec(k, lv, _data_kind(results), gain_std=gain_std).parameters()
                                          for lv in levels] for k in noise},
                 "points": [results[p["key"]] for p in points], "provenance": provenance.collect("sweep")}
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


def _kind(p) -> str:
    """A point's kind: clean (tested under every test-time noise), mismatch, bits or negatives."""
    return p["point"].get("kind") or ("clean" if p["key"].endswith("-clean") else "")


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
                    vals = [p["accuracy"]["clean"] for p in pts if p["point"]["rule"] == rule and (
                        (lv == 0 and _kind(p) == "clean") or p["point"].get("mismatch_level") == lv)]
                else:
                    vals = [p["accuracy"][f"{kind}:{lv}"] for p in pts
                            if p["point"]["rule"] == rule and _kind(p) == "clean"]
                if vals:
                    row.append((lv, *_stat(vals)))
            per_rule[rule] = row
        out[f"noise:{kind}"] = per_rule
    for axis, field in (("bits", "bits"), ("negatives", "negatives")):
        if table[axis]:
            out[axis] = {rule: [(x, *_stat([p["accuracy"]["clean"] for p in pts if p["point"]["rule"] == rule
                                            and p["point"].get(field) == x])) for x in numeric_order(table[axis])]
                         for rule in table["rules"]}
    return out


def drops(table: dict, kind: str, rule: str) -> dict:
    """level -> (mean, std over seeds, per-seed list) of the accuracy *drop* from level 0 under noise ``kind``:
    the robustness measure that does not reward a rule for starting higher. Paired by seed: each seed's
    level-L accuracy minus the same seed's clean accuracy (a mismatch level is its own training, so its
    seed's clean training is the reference)."""
    pts = [p for p in table["points"] if p["point"]["rule"] == rule]
    clean = {p["point"]["seed"]: p["accuracy"]["clean"] for p in pts if _kind(p) == "clean"}
    out = {}
    for lv in table["levels"]:
        if lv == 0:
            continue
        if kind == "mismatch":
            per = {p["point"]["seed"]: p["accuracy"]["clean"] for p in pts if p["point"].get("mismatch_level") == lv}
        else:
            per = {p["point"]["seed"]: p["accuracy"][f"{kind}:{lv}"] for p in pts if _kind(p) == "clean"}
        d = [per[sd] - clean[sd] for sd in sorted(per) if sd in clean]
        if d:
            out[lv] = (*_stat(d), d)
    return out


def scale_line(table: dict) -> str:
    """The settings every point of a sweep shares, in words (for sweep.md and the plot titles)."""
    sc = table.get("scale") or {}
    if not sc:
        return ""
    words = f"{sc['dataset']}, train_limit {sc['train_limit'] or 'all'}, test_limit {sc['test_limit'] or 'all'}, " \
            f"{sc['epochs']} epoch(s), seeds {', '.join(map(str, table.get('seeds', [])))}"
    if sc.get("settings"):
        return labels.line({**sc["settings"], "scale": words})
    return (f"{sc['model']} on {words} of batch {sc['batch_size']}, N = {sc['negatives']} negatives, "
            f"{sc['precision']}")


def _title(table: dict) -> str:
    sc = table.get("scale") or {}
    if not sc.get("settings"):
        return "\n" + scale_line(table)
    words = f"{sc['dataset']}, train_limit {sc['train_limit'] or 'all'}, {sc['epochs']} epoch(s), " \
            f"seeds {', '.join(map(str, table.get('seeds', [])))}"
    return "\n" + labels.title_lines({**sc["settings"], "scale": words})


def markdown(table: dict) -> str:
    seeds = table["seeds"]
    over = f"overrides `{' '.join(table['overrides'])}`" if table.get("overrides") else "no overrides"
    lines = ["# Sweep", "", f"Config `{rundir.display_path(table['config'])}`, {over}; rules {', '.join(table['rules'])}, seeds "
             f"{', '.join(map(str, seeds))} (mean ± std over seeds where more than one).", "",
             f"Training scale: {scale_line(table)}. A bit-width point sets the weights and activations to its "
             "width; a negatives point sets `learning.negatives` (or `negative_reduce: avg`).", ""]
    for name, per_rule in table["curves"].items():
        xs = numeric_order({x for rows in per_rule.values() for x, *_ in rows})
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
    if table.get("provenance"):
        lines += [""] + provenance.markdown(table["provenance"])
    return "\n".join(lines) + "\n"


def plot(table: dict, out_dir: str) -> None:
    """One figure per swept axis. Bit widths sit on a log2 axis and negatives in numeric order (``avg``
    last), so neither axis sorts as text; every title names the settings (``labels``)."""
    from .. import plots
    sub = _title(table)
    for name, per_rule in table["curves"].items():
        series = {r: ([x for x, *_ in rows], [100 * m for _, m, _ in rows]) for r, rows in per_rule.items()}
        errors = {r: [100 * s for *_, s in rows] for r, rows in per_rule.items()} if len(table["seeds"]) > 1 else None
        if name.startswith("noise:"):
            kind = name.split(":", 1)[1]
            plots.lines(series, f"{kind} noise level", "test accuracy (%)",
                        os.path.join(out_dir, f"accuracy_vs_{kind}.png"), f"Accuracy under {kind} noise{sub}",
                        errors=errors, xticks=table["levels"])
        elif name == "bits":
            plots.lines(series, "bit width (weights = activations; log scale)", "test accuracy (%)",
                        os.path.join(out_dir, "accuracy_vs_bits.png"), f"Accuracy vs bit width{sub}",
                        errors=errors, xticks=numeric_order(table["bits"]), log2_x=True)
        else:
            order = numeric_order(table["negatives"])          # categories in numeric order, avg last
            series = {r: ([order.index(x) for x in xs], ys) for r, (xs, ys) in series.items()}
            plots.lines(series, "negatives N (avg = N=C-1 averaged)", "test accuracy (%)",
                        os.path.join(out_dir, "accuracy_vs_negatives.png"),
                        f"Accuracy vs number of negatives{sub}", errors=errors,
                        xticks=list(range(len(order))), xticklabels=[str(x) for x in order])
