"""``chipsim compare``: BP against local rules as depth grows (the DF paper's Fig. 4A-B, on a chip).

For every (depth, rule) point, the engine executes one real training step of
a member of the depth family (``modelspec.cnn_family``; its input shape is the
dataset's, ``workload.dataset``; width and pool positions are options) and the
chip model costs its trace two ways: ``streaming`` (samples stream through
the cores -- what the modelled chip needs; also step latency, backward phase,
NoC and energy) and ``whole-batch`` (every tensor of the batch in one memory
pool, at the chip's widths; ``chipsim.chip.pool``, which needs no chip and
exists even where the chip cannot hold the model). The framework figure (the
paper's own kind of measurement) is ``measured``: one real PyTorch training
step of the same rule and model (``chipsim.framework``), and ``measured-ckpt``
for BP with activation checkpointing. Nothing here knows a rule's memory formula: the ratios
come out of the traces. The dataflow (``mapping.negatives``,
``training.update``) is whatever the config and ``--set`` say.
The ratios to BP and the table's markdown and plots are in ``compare_report``
(re-exported here). Every point is also costed under each mapping strategy
(``fit``, ``balanced``, ``search``: the same trace, no engine rerun), so the
table shows how far the mapping moves a verdict (``strategy_ratios``).
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
from .compare_report import (BASELINE, MODES, PAPER_RATIO, RATIO_METRICS, RATIO_NAMES,  # noqa: F401
                             STRATEGIES, _measured_label, _settings_line, _title_settings, markdown, plot,
                             ratio_lines, ratio_name, ratios, strategy_ratios)
from .jobs import RESULTS_NAME, limit_threads, number, run_points, threads_per_job
from .keys import point_key

DEFAULT_RULES = ("bp", "df-o", "df-r")
DEFAULT_DEPTHS = (5, 8, 11, 15, 20, 25)
DEFAULT_POOLS = (0, 1)
FAMILY_RULES = ("bp", "ff", "symba", "df", "df-o", "df-r", "cwc")


def _point(p: dict) -> dict:
    """One (depth, rule) point; runs in a worker process."""
    from ..chip import simulate, whole_batch
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
    # the GPU-style measure: every tensor of the batch in ONE memory pool, peak over program order; it does
    # not depend on the chip, so it exists even where the chip cannot hold the model
    pool = whole_batch(trace)
    out["whole-batch"] = {"fits": True, "total_peak_bytes": pool.peak_bytes, "by_category": pool.at_peak}
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
    if p.get("strategies", True):        # the verdict table's ratios under each strategy (compare's points)
        out["strategies"] = by_strategy(trace, hw, chip)
    out["chip_seconds"] = time.perf_counter() - t1
    return out


def by_strategy(trace, hw, chip=None) -> dict:
    """The step's cost under each ``mapping.strategy`` (``STRATEGIES``), on the same trace: strategy ->
    {fits, latency_us, energy_per_sample_pj, cores_used[, layouts, placement, shared_work]}. ``chip``: the report
    already made under ``hw``'s own strategy (reused, not costed again)."""
    from ..chip import simulate
    out = {}
    for s in STRATEGIES:
        if chip is not None and s == hw.mapping.strategy:
            rep = chip
        else:
            try:
                rep = simulate(trace, dataclasses.replace(hw, mapping=dataclasses.replace(hw.mapping, strategy=s)))
            except MappingError as exc:
                out[s] = {"fits": False, "error": str(exc)}
                continue
        out[s] = {"fits": True, "latency_us": rep.latency_us, "cores_used": rep.mapping.cores_used,
                  "energy_per_sample_pj": rep.energy.per_sample()["total_pj"]}
        if rep.mapping.search:
            out[s].update(layouts=rep.mapping.search["layouts"], placement=rep.mapping.placement,
                          shared_work=rep.mapping.shared_work)   # its seconds are in chip_seconds (wall clock)
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
    for mode in ("whole-batch", "streaming"):
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
                 "rows": rows, "ratios": ratios(rows, rules, depths),
                 "strategy_ratios": strategy_ratios(rows, rules, depths), "provenance": provenance.collect("compare")}
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
