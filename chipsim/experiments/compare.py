"""``chipsim compare``: BP against local rules as depth grows (the DF paper's Fig. 4A-B, on a chip).

For every (depth, rule) point, the engine executes one real training step of
a member of the depth family (``modelspec.cnn_family``; its input shape is the
dataset's, ``workload.dataset``; width and pool positions are options) and the
chip model costs its trace three ways: ``streaming`` (samples stream through
the cores -- what the modelled chip needs; also step latency, backward phase,
NoC and energy), ``whole-batch`` (every tensor of the batch in one memory
pool, at the chip's widths) and ``pytorch`` (the same pool as a float32
framework on a GPU holds it, the paper's own measurement), both from
``chipsim.chip.pool``, which needs no chip and exists even where the chip
cannot hold the model. Nothing here knows a rule's memory formula: the ratios
come out of the traces. The dataflow (``mapping.negatives``,
``training.update``) is whatever the config and ``--set`` say.
"""
from __future__ import annotations

import dataclasses
import os
import time


from .. import provenance, rundir
from ..config import LoadedConfig, check_model, load_config
from ..errors import ConfigError, MappingError, OutputError, interrupt_of
from ..modelspec import cnn_family
from ..report import atomic_write, write_json
from . import args as check
from .. import labels
from .cluster import check_cluster
from .jobs import RESULTS_NAME, limit_threads, number, run_points, threads_per_job
from .keys import point_key

DEFAULT_RULES = ("bp", "df-o", "df-r")
DEFAULT_DEPTHS = (5, 8, 11, 15, 20, 25)
DEFAULT_POOLS = (0, 1)
BASELINE = "bp"
FAMILY_RULES = ("bp", "ff", "symba", "df", "df-o", "df-r", "cwc")

#: every ratio to BP that compare computes: (memory mode, metric) -> words for tables, plots and the console
RATIO_NAMES = {
    ("streaming", "total_peak_bytes"): "SRAM, sum of core peaks (streaming)",
    ("streaming", "peak_core_bytes"): "SRAM of the fullest core (streaming)",
    ("whole-batch", "total_peak_bytes"): "whole-batch memory demand (one pool, each tensor once)",
    ("pytorch", "total_peak_bytes"): "PyTorch-style memory (float32 parameters, gradients, Adam, saved tensors)",
    ("measured", "total_peak_bytes"): "framework peak, measured in PyTorch (one step's allocator bytes)",
    ("measured-ckpt", "total_peak_bytes"): "framework peak, measured, against BP with activation checkpointing",
    ("streaming", "latency_us"): "step latency",
    ("streaming", "sample_latency_us"): "one sample's latency",
    ("streaming", "backward_us"): "one sample's backward phase",
    ("streaming", "noc_bytes"): "NoC traffic per step",
    ("streaming", "energy_per_sample_pj"): "energy per sample",
}
MODES = ("streaming", "whole-batch", "pytorch", "measured", "measured-ckpt")
PAPER_RATIO = {11: 0.40, 25: 0.60}    # DF's memory / BP's, Wu et al. 2024 Fig. 4A ("< ~40%", "~60%")


def _point(p: dict) -> dict:
    """One (depth, rule) point; runs in a worker process."""
    from ..chip import simulate, whole_batch
    from ..chip.pool import PYTORCH_UNSIZED, pytorch
    from ..chip.timing import lock_waits
    from ..runner import trace_one_step
    limit_threads(p["threads"])
    cfg = load_config(p["config"], tuple(p["overrides"]) + (f"workload.rule={p['rule']}",))
    if not p.get("own_model"):
        cfg = dataclasses.replace(cfg, model=cnn_family(p["depth"], width=p["width"],
                                                        pools=p.get("pools", DEFAULT_POOLS)))
    hw = cfg.hw
    t0 = time.perf_counter()
    trace = trace_one_step(cfg)
    out = {"depth": p["depth"], "rule": p["rule"], "engine_seconds": time.perf_counter() - t0,
           "dataset": hw.workload.dataset, "negatives": hw.mapping.negatives, "update": hw.training.update,
           "macs": trace.macs(), "recompute_macs": trace.macs("recompute"),
           "activation_bytes_per_sample": sum(b.nbytes for b in trace.buffers
                                              if b.category in ("act_update", "act_backward")) / trace.samples}
    # the GPU-style measures: every tensor of the batch in ONE memory pool, peak over program order; they
    # do not depend on the chip, so they exist even where the chip cannot hold the model
    for mode, pool in (("whole-batch", whole_batch(trace)), ("pytorch", pytorch(trace))):
        out[mode] = ({"fits": True, "total_peak_bytes": pool.peak_bytes, "by_category": pool.at_peak} if pool
                     else {"fits": False, "error": PYTORCH_UNSIZED})
    if p.get("measure_device"):                  # the framework figure, measured (chipsim.framework)
        from ..framework.point import measure_point
        out["measured"] = measure_point(hw, cfg.model, p["measure_device"])
        out["measured-ckpt"] = (measure_point(hw, cfg.model, p["measure_device"], "checkpointed")
                                if p["rule"] == BASELINE else out["measured"])
    t1 = time.perf_counter()
    try:
        chip = simulate(trace, hw)
    except MappingError as exc:
        out["streaming"] = {"fits": False, "error": str(exc)}
        out["chip_seconds"] = time.perf_counter() - t1
        return out
    led = chip.ledger
    one = simulate(trace.per_sample(), hw)
    lock = {str(k): chip.spec.cycles_to_us(v) for k, v in sorted(lock_waits(trace, chip.schedule).items()) if v > 0}
    out["streaming"] = {"fits": True, "cores_used": chip.mapping.cores_used, "peak_core_bytes": led.peak_bytes,
                        "total_peak_bytes": led.total_peak_bytes(), "by_category": led.totals(),
                        "latency_us": chip.latency_us, "throughput": chip.throughput,
                        "noc_bytes": sum(chip.tag_bytes().values()), "byte_hops": chip.byte_hops,
                        "energy_per_sample_pj": chip.energy.per_sample()["total_pj"],
                        "energy_by_op_pj": chip.energy.by_op,
                        "lock_wait_us": sum(lock.values()), "lock_wait_by_layer_us": lock,
                        "layers": len(trace.layers),
                        "sample_latency_us": one.latency_us, "backward_us": _backward_time_us(one)}
    out["chip_seconds"] = time.perf_counter() - t1
    return out


_STREAMING_NUMBERS = ("cores_used", "peak_core_bytes", "total_peak_bytes", "latency_us", "throughput", "noc_bytes",
                      "byte_hops", "energy_per_sample_pj", "lock_wait_us", "layers", "sample_latency_us",
                      "backward_us")


def check_result(p: dict, r: dict) -> None:
    """A logged point has what the tables and plots read (``jobs.run_points(check=...)``)."""
    if r["depth"] != p["depth"] or r["rule"] != p["rule"]:
        raise ValueError(f"it is logged for depth {r['depth']!r}, rule {r['rule']!r}")
    for k in ("engine_seconds", "macs", "activation_bytes_per_sample", "chip_seconds"):
        number(r[k], 0)
    for mode in ("whole-batch", "pytorch", "streaming"):
        m = r[mode]
        if not isinstance(m["fits"], bool):
            raise TypeError(f"{mode}.fits is not true/false")
        if not m["fits"]:
            continue
        number(m["total_peak_bytes"], 0)
        for v in m["by_category"].values():
            number(v, 0)
    if r["streaming"]["fits"]:
        for k in _STREAMING_NUMBERS:
            number(r["streaming"][k], 0)


def _backward_time_us(chip) -> float:
    """For a one-sample schedule: time from the end of its last forward op to the end of its last
    per-sample op.

    That is the paper's 'backward time' (gradient computation after the
    forward pass): BP walks back through every block in turn; DF-R's blocks
    have mostly finished their gradients by the time the top block's forward
    ends. The optimizer updates that follow run once per step, not per
    sample, and do the same work under every rule; the step latency includes them.
    """
    rows = [r for r in chip.gantt_rows() if r["instance"] is not None]
    if not rows:
        return 0.0
    last_fwd = max((r["end"] for r in rows if r["kind"] in ("fwd", "goodness")), default=0.0)
    last_any = max(r["end"] for r in rows)
    return chip.spec.cycles_to_us(max(last_any - last_fwd, 0.0))


def _settings(cfg: LoadedConfig, model: str | None = None) -> dict:
    """What the table was made with, for its markdown and plot titles (``labels``: chip, model, N, batch,
    dataflow, mapping, precision, scale)."""
    hw = cfg.hw
    n = hw.learning.negatives
    return {"labels": labels.settings(cfg, model=model, scale="one engine step per point, no training"),
            "overrides": list(cfg.overrides), "batch_size": hw.training.batch_size,
            "negatives": "classes - 1 (9)" if n is None else n, "negative_reduce": hw.learning.negative_reduce,
            "precision": f"W{hw.precision.weight_bits}/A{hw.precision.activation_bits}/"
                         f"G{hw.precision.gradient_bits}/U{hw.precision.update_bits}",
            "mapping": hw.mapping.strategy + (f", objective {hw.mapping.objective}"
                                              if hw.mapping.strategy == "search" else ""),
            "micro_batch": hw.mapping.micro_batch,
            "memory_mode": hw.mapping.memory_mode}


def compare(config, rules=DEFAULT_RULES, depths=DEFAULT_DEPTHS, overrides=(), width: int = 32,
            out_dir: str | None = None, jobs: int | None = None, progress: bool = True,
            own_model: bool = False, cluster=None, pools=DEFAULT_POOLS, device: str | None = "cpu") -> dict:
    """Run the comparison; writes compare.json, compare.md and plots into ``out_dir``. Returns the table.

    ``own_model=True`` compares the rules on the config's own model (one point per rule) instead of the
    depth family; ``depths`` is then ignored. A rerun into the same ``out_dir`` reuses the points whose
    settings are unchanged (``keys.point_key``) and computes the others.
    ``cluster``: run the points on a Dask cluster (``jobs.run_points``). ``pools``: the conv blocks of the
    family followed by a 2x2 max-pool. ``device``: where the framework figure is measured (``cpu``: torch.profiler
    memory events, ``cuda``: torch.cuda.max_memory_allocated; None: not measured).
    """
    check_cluster(cluster)
    cfg = config if isinstance(config, LoadedConfig) else load_config(config, tuple(overrides))
    if not any(o.startswith("mapping.strategy=") for o in cfg.overrides):
        # a verdict between rules compares each at its own best layout (chipsim.chip.search), unless asked
        cfg = load_config(cfg.path, ("mapping.strategy=search",) + tuple(cfg.overrides))
    rules = check.rules(rules)
    jobs = check.jobs(jobs)
    _check_device(device)
    if own_model:
        depths = (cfg.model.depth,)
    else:
        depths = check.integers(depths, "--depths", 2, "depth (conv blocks + one dense block)")
        check.positive_int(width, "--width", "conv channels of the depth family", allow_none=False)
    if not own_model:                            # the depth family is conv/dense: its rules only
        bad = [r for r in rules if r not in FAMILY_RULES]
        if bad:
            raise ConfigError(f"--rules: {bad[0]!r} is not a rule of the depth family; allowed: "
                              f"{', '.join(FAMILY_RULES)}")
    pools = tuple(sorted(set(int(x) for x in pools)))
    if not own_model:
        if any(x < 0 for x in pools):
            raise ConfigError(f"--pools: {min(pools)} is not a block index; allowed: conv blocks 0..depth-2")
        too_deep = [x for x in pools if x > min(depths) - 2]
        if too_deep:
            raise ConfigError(f"--pools: block {too_deep[0]} is not a conv block at depth {min(depths)} "
                              f"(conv blocks 0..{min(depths) - 2}); use smaller positions or larger --depths")
        _check_pools_fit(cfg, pools)
    jobs = jobs or os.cpu_count() or 1
    points = []
    for d in depths:
        for r in rules:
            pcfg = load_config(cfg.path, tuple(cfg.overrides) + (f"workload.rule={r}",))
            model = pcfg.model if own_model else cnn_family(d, width=width, pools=pools)
            if not own_model:                    # absurd sizes are refused before any worker starts
                check_model(pcfg.hw, model, f"--depths {d} --width {width}")
            label = f"{cfg.model.name}-{r}" if own_model else f"d{d}-{r}-w{width}"
            points.append({"key": point_key(label, pcfg, model, depth=d, width=width, own_model=own_model,
                                            pools=list(pools), measure_device=device),
                           "depth": d, "rule": r, "width": width, "pools": list(pools), "own_model": own_model,
                           "config": cfg.path, "measure_device": device,
                           "overrides": list(cfg.overrides), "threads": threads_per_job(jobs)})
    with rundir.claimed(out_dir, cfg.name, "compare", reusable_marker=RESULTS_NAME) as out_dir:
        if progress:
            print(f"chipsim compare: {', '.join(rules)} on "
                  + (f"{cfg.model.name}" if own_model else f"cnn_family(depth, width={width}) at depths "
                     f"{', '.join(map(str, depths))}")
                  + f"; one engine step each on {cfg.hw.chip.name}"
                  + (f"; overrides: {' '.join(cfg.overrides)}" if cfg.overrides else "")
                  + f"; writing {out_dir}{os.sep}", flush=True)
        try:
            results = run_points(_point, points, out_dir, jobs=jobs, progress=progress, desc="compare",
                                  cluster=cluster, check=check_result)
        except OSError as exc:
            raise OutputError(f"{out_dir}: cannot write {RESULTS_NAME}: {exc.strerror or exc}") from None
        except (KeyboardInterrupt, SystemError) as exc:
            interrupt = interrupt_of(exc)
            if interrupt is None:
                raise
            interrupt.resume_hint = f"finished points are in {os.path.join(out_dir, RESULTS_NAME)}; rerun the same " \
                              f"command with --out {out_dir} to continue"
            raise interrupt from None
        rows = [results[p["key"]] for p in points]
        table = {"config": cfg.path, "chip": cfg.hw.chip.name, "width": width, "pools": list(pools),
                 "rules": rules, "depths": list(depths), "model": cfg.model.name if own_model else None,
                 "dataset": cfg.hw.workload.dataset, "negatives": cfg.hw.mapping.negatives,
                 "update": cfg.hw.training.update, "batch_size": cfg.hw.training.batch_size,
                 "settings": _settings(cfg, None if own_model else f"cnn_family(depth, width={width}, "
                                                                   f"pools={tuple(pools)})"),
                 "rows": rows, "ratios": ratios(rows, rules, depths), "provenance": provenance.collect("compare")}
        write_json(os.path.join(out_dir, "compare.json"), table)
        atomic_write(os.path.join(out_dir, "compare.md"), markdown(table))
        plot(table, out_dir)
    return table


def _check_device(device) -> None:
    if device not in (None, "cpu", "cuda"):
        raise ConfigError(f"--device: {device!r}; allowed: cpu, cuda, none")
    if device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise ConfigError("--device: cuda, but torch sees no CUDA device here; allowed on this machine: cpu, none")


def _check_pools_fit(cfg, pools) -> None:
    """Each pool halves the map: refuse in one line positions the dataset's input cannot take."""
    from ..runner import DATASET_SHAPES
    side = min(DATASET_SHAPES[cfg.hw.workload.dataset][1:3])
    for n, x in enumerate(pools):
        side //= 2
        if side < 1:
            raise ConfigError(f"--pools: the pool after block {x} gets a map of 0 pixels ({cfg.hw.workload.dataset} "
                              f"inputs are {DATASET_SHAPES[cfg.hw.workload.dataset][1]} pixels wide); "
                              f"use at most {n} pools")


RATIO_METRICS = ("total_peak_bytes", "latency_us", "sample_latency_us", "backward_us", "energy_per_sample_pj")


def ratios(rows, rules, depths) -> dict:
    """Rule/BP ratios per depth: ``mode:metric:rule`` -> {depth: ratio}, for every (mode, metric) of
    ``RATIO_NAMES`` and every mode that has a metric of ``RATIO_METRICS``."""
    by = {(r["depth"], r["rule"]): r for r in rows}
    pairs = list(RATIO_NAMES) + [(m, x) for m in MODES for x in RATIO_METRICS if (m, x) not in RATIO_NAMES]
    out = {}
    for mode, metric in pairs:
        for rule in rules:
            if rule == BASELINE:
                continue
            vals = {}
            for d in depths:
                a, b = by.get((d, rule), {}).get(mode, {}), by.get((d, BASELINE), {}).get(mode, {})
                if a.get("fits") and b.get("fits") and b.get(metric):
                    vals[d] = a[metric] / b[metric]
            if vals:
                out[f"{mode}:{metric}:{rule}"] = vals
    return out


def ratio_name(key: str) -> str:
    """``streaming:total_peak_bytes:df-o`` -> ``df-o / bp, SRAM, sum of core peaks (streaming)``."""
    mode, metric, rule = key.split(":")
    return f"{rule} / {BASELINE}, {RATIO_NAMES.get((mode, metric), f'{metric} ({mode})')}"


def ratio_lines(table: dict) -> list:
    """One line per (metric, rule) with every depth's ratio: what the console prints. The memory of
    ``mapping.memory_mode`` (the headline figure) comes first."""
    out = []
    first = f"{table.get('settings', {}).get('memory_mode', 'streaming')}:total_peak_bytes:"
    for key, vals in sorted(table["ratios"].items(), key=lambda kv: not kv[0].startswith(first)):
        if vals:
            out.append(f"{ratio_name(key)}: " + ", ".join(f"{v:.2f} at {d} blocks" for d, v in vals.items()))
    if not out:
        out.append(f"no ratios to {BASELINE}: add {BASELINE} to --rules (and a rule it fits beside)")
    return out


def _settings_line(table: dict) -> str:
    st = table.get("settings", {})
    over = f"overrides `{' '.join(st['overrides'])}`" if st.get("overrides") else "no overrides"
    if st.get("labels"):
        return f"Settings: config `{rundir.display_path(table['config'])}`, {over}; {labels.line(st['labels'])}."
    return (f"Settings: config `{rundir.display_path(table['config'])}`, {over}; batch {st.get('batch_size', table['batch_size'])}, "
            f"N = {st.get('negatives', '?')} negatives ({st.get('negative_reduce', 'max')}), "
            f"{st.get('precision', '')}, mapping `{st.get('mapping', '')}`, micro-batch {st.get('micro_batch', '')}.")


def markdown(table: dict) -> str:
    flow = (f"Dataflow: `mapping.negatives: {table.get('negatives', 'parallel')}`, "
            f"`training.update: {table.get('update', 'batch')}`.")
    if table.get("model"):
        what = [f"# BP vs local rules on `{table['model']}`, chip `{table['chip']}`", "",
                f"The config's own model ({table['depths'][0]} blocks); one training step of "
                f"{table['batch_size']} samples executed by the engine per rule. {flow}", ""]
    else:
        what = [f"# BP vs local rules over depth on `{table['chip']}`", "",
                f"Depth family: `cnn_family(depth, width={table['width']}, pools={tuple(table.get('pools', (0, 1)))})` "
                f"(depth-1 conv3x3 blocks, then a dense block) on `{table.get('dataset', 'mnist5k')}`-shaped input; "
                f"one training step of {table['batch_size']} samples executed by the engine per point. {flow}", ""]
    lines = what + [_settings_line(table), "",
             "Streaming = samples stream through the cores (what the chip needs); whole-batch = every "
             "tensor of the batch held in one shared memory, peak over time, at the chip's widths; pytorch = the "
             "same pool in float32, as chip/pool.py models a framework by rules on buffer names (a model, not a "
             "measurement: see the measured columns). "
             "Backward phase = for one sample alone, time from its last forward op to its last update op. "
             f"Measured = one training step of the same rule, model, batch, N and optimizer in PyTorch "
             f"(`chipsim.framework`), peak allocator bytes over the step ({_measured_label(table)}); "
             "ckpt = BP with one activation checkpoint per block.", "",
             "| depth | rule | cores | total peak SRAM, streaming (KiB) | worst core (KiB) | whole-batch demand (KiB) "
             "| pytorch mode (KiB) | step latency (µs) | one sample (µs) | its backward phase (µs) | NoC (KiB/step) "
             "| energy/sample (µJ) | recomputed MACs | measured (KiB) | measured, BP ckpt (KiB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table["rows"]:
        m, wb, pt = r["streaming"], r["whole-batch"], r.get("pytorch", {})
        pt_kib = f"{pt['total_peak_bytes'] / 1024:.0f}" if pt.get("fits") else "-"
        ms = " | ".join(f"{x['total_peak_bytes'] / 1024:.0f}" if x.get("fits") else "-"
                        for x in (r.get("measured", {}), r.get("measured-ckpt", {}) if r["rule"] == BASELINE else {}))
        if not m.get("fits"):
            lines.append(f"| {r['depth']} | {r['rule']} | does not fit: {m['error'][:80]}... | | | "
                         f"{wb['total_peak_bytes'] / 1024:.0f} | {pt_kib} | | | | | | | {ms} |")
            continue
        lines.append(f"| {r['depth']} | {r['rule']} | {m['cores_used']} | {m['total_peak_bytes'] / 1024:.0f} | "
                     f"{m['peak_core_bytes'] / 1024:.0f} | {wb['total_peak_bytes'] / 1024:.0f} | {pt_kib} | "
                     f"{m['latency_us']:.0f} | {m['sample_latency_us']:.0f} | {m['backward_us']:.0f} | "
                     f"{m['noc_bytes'] / 1024:.0f} | {m['energy_per_sample_pj'] / 1e6:.2f} | "
                     f"{r.get('recompute_macs', 0):,} | {ms} |")
    lines += ["", "## Ratios to BP", ""]
    for k, vals in table["ratios"].items():
        if vals:
            lines.append(f"- {ratio_name(k)}: " + ", ".join(f"depth {d}: {v:.2f}" for d, v in vals.items()))
    if table.get("provenance"):
        lines += [""] + provenance.markdown(table["provenance"])
    return "\n".join(lines) + "\n"


def _title_settings(table: dict) -> str:
    """The settings of every figure's title (``labels.title_lines``), overrides after them."""
    st = table.get("settings", {})
    text = labels.title_lines(st["labels"]) if st.get("labels") else \
        f"chip {table['chip']}, batch {table['batch_size']}, N = {st.get('negatives', '?')}, {st.get('precision', '')}"
    return text + (f"\n{' '.join(st['overrides'])}" if st.get("overrides") else "")


def _measured_label(table: dict) -> str:
    """``measured, torch X.Y, cpu`` from the rows (each measured row carries its label)."""
    names = sorted({r["measured"]["label"] for r in table["rows"] if r.get("measured", {}).get("fits")})
    return ", ".join(names) or "not measured"


def plot(table: dict, out_dir: str) -> None:
    from .. import plots
    by = {(r["depth"], r["rule"]): r for r in table["rows"]}
    for mode, metric, label, fname in (
            ("streaming", "total_peak_bytes", "peak SRAM, sum over cores (KiB)", "memory_streaming"),
            ("whole-batch", "total_peak_bytes", "whole-batch memory demand (KiB)", "memory_whole_batch"),
            ("pytorch", "total_peak_bytes", "pytorch-mode memory (KiB, float32)", "memory_pytorch"),
            ("measured", "total_peak_bytes", f"framework peak (KiB, {_measured_label(table)})", "memory_measured"),
            ("streaming", "latency_us", "training step latency (µs)", "latency_step"),
            ("streaming", "backward_us", "one sample's backward phase (µs)", "latency_backward")):
        series = {}
        for rule in table["rules"]:
            xs, ys = [], []
            for d in table["depths"]:
                m = by.get((d, rule), {}).get(mode, {})
                if m.get("fits"):
                    xs.append(d)
                    ys.append(m[metric] / (1024 if metric.endswith("bytes") else 1))
            series[rule] = (xs, ys)
        title = f"{label.split(' (')[0]} vs depth\n{_title_settings(table)}"
        ratio = table["ratios"].get(f"{mode}:{metric}:df-r", {})
        if ratio:
            title += "\nDF-R/BP: " + ", ".join(f"{d}:{v:.2f}" for d, v in ratio.items())
        plots.lines(series, "number of blocks", label, os.path.join(out_dir, f"{fname}.png"), title,
                    xticks=table["depths"], y_from_zero=True)
    for mode, fname in (("streaming", "streaming"), ("whole-batch", "whole_batch"), ("pytorch", "pytorch"),
                        ("measured", "measured"), ("measured-ckpt", "measured_vs_checkpointed_bp")):
        panels = {rule: {d: {c: v / 1024 for c, v in by[(d, rule)][mode]["by_category"].items()}
                         for d in table["depths"] if by.get((d, rule), {}).get(mode, {}).get("by_category")}
                  for rule in table["rules"]}
        if any(panels.values()):
            plots.stacked_by_depth(panels, os.path.join(out_dir, f"memory_by_category_{fname}.png"),
                                   f"{mode} memory by category vs depth\n{_title_settings(table)}", "KiB")
        series = {rule: (list(v), list(v.values())) for rule in table["rules"] if rule != BASELINE
                  for v in [table["ratios"].get(f"{mode}:total_peak_bytes:{rule}", {})] if v}
        if series:
            marks = {"paper (Fig. 4A)": (list(PAPER_RATIO), list(PAPER_RATIO.values()))}
            plots.lines(series, "number of blocks", f"memory / BP's ({mode})",
                        os.path.join(out_dir, f"ratio_{fname}.png"),
                        f"local rule / BP memory, {mode}"
                        + (f" ({_measured_label(table)})" if mode.startswith("measured") else "")
                        + f" (each rule and BP on the same model)\n{_title_settings(table)}",
                        xticks=table["depths"], hline=(1.0, "= BP"), marks=marks, y_from_zero=True)
