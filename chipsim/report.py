"""A run directory: summary.json, report.md, per-core and per-layer CSVs, PNGs.

The files of one run appear together or not at all: ``write_run`` writes them
into a staging directory and moves them into place only when every one is
complete (``atomic.staged_dir``), so an interrupted run or a full disk never
leaves a half-written report, nor new CSVs beside an old summary, that a
later script would mistake for a result.
"""
from __future__ import annotations

import csv
import io
import json
import os

import numpy as np

from . import perfetto, plots
from .atomic import atomic_file, staged_dir
from .trace import CATEGORIES


def atomic_write(path: str, text: str) -> str:
    with atomic_file(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    return path


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: str, data) -> str:
    return atomic_write(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _csv(rows: list, columns: list) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return buf.getvalue()


def per_core_rows(chip) -> list:
    """One row per used core: where it is, what it holds at its peak, how busy it is."""
    rows = []
    busy = chip.busy()
    lat = chip.latency_cycles or 1.0
    for layer in chip.mapping.layers:
        for s in chip.mapping.slices_of(layer.index):
            m = chip.ledger.cores[s.core]
            row = {"core": s.core, "row": s.coord[0], "col": s.coord[1], "layer": layer.index,
                   "layer_name": layer.name, "units": f"{s.lo}-{s.hi}", "peak_bytes": int(m.peak_bytes),
                   "peak_pct": round(100 * m.peak_bytes / chip.ledger.capacity, 2),
                   "busy_cycles": round(busy.get(s.core, 0.0), 1),
                   "busy_pct": round(100 * busy.get(s.core, 0.0) / lat, 2)}
            for c in CATEGORIES:
                row[f"{c}_at_peak"] = int(m.at_peak.get(c, 0))
            rows.append(row)
    return rows


def per_layer_rows(chip, history_last=None) -> list:
    """One row per layer: its split, its work per sample, its peak memory."""
    tr = chip.trace
    rows = []
    for layer in chip.mapping.layers:
        sl = chip.mapping.slices_of(layer.index)
        per = {k: tr.macs(kind=k, layer=layer.index) / tr.samples
               for k in ("fwd", "grad_w", "grad_x", "feedback")}
        worst = max(chip.ledger.cores[s.core].peak_bytes for s in sl)
        row = {"layer": layer.index, "name": layer.name, "units": layer.units, "slices": len(sl),
               "cores": " ".join(str(s.core) for s in sl), "peak_core_bytes": int(worst),
               "fwd_macs_per_sample": int(per["fwd"]), "grad_w_macs_per_sample": int(per["grad_w"]),
               "grad_x_macs_per_sample": int(per["grad_x"]), "feedback_macs_per_sample": int(per["feedback"])}
        if history_last is not None and history_last.get("per_block_accuracy") \
                and layer.index < len(history_last["per_block_accuracy"]):
            row["block_test_accuracy"] = history_last["per_block_accuracy"][layer.index]
        rows.append(row)
    return rows


def _md_table(rows: list, columns: list) -> str:
    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |\n" for r in rows)


#: the framework row when ``mapping.memory_mode`` is not ``pytorch`` (no PyTorch step was run)
FRAMEWORK_NOT_ASKED = ("not measured: set mapping.memory_mode: pytorch to measure one PyTorch training step "
                       "of this rule and model (chipsim.framework)")


def framework_words(fw: dict | None) -> str:
    """The measured framework peak of ``summary["framework"]`` (``runner.framework_memory``) with what it was
    measured on and how long it took, or the one-line reason there is none. Never a modelled stand-in."""
    if fw is None:
        return FRAMEWORK_NOT_ASKED
    if not fw.get("fits"):
        return fw["error"]
    when = ("measured earlier in this process" if fw.get("reused")
            else f"measured in {fw['seconds']:.1f} s" if fw.get("seconds") is not None else "measured")
    on = "" if fw["device"] == "cpu" else f" on {fw['device']}"
    return (f"{fw['total_peak_bytes'] / 1024:.1f} KiB ({fw['label']}): peak allocator bytes of one PyTorch "
            f"training step ({fw['rule']} {fw['variant']}, {fw['rows']} rows, {fw['optimizer']}; {fw['how']}{on}), "
            f"{when}")


def _memory_rows(summary: dict) -> dict:
    """The three memory measures, by ``mapping.memory_mode`` value: (label, value)."""
    chip = summary["chip"]
    led = chip["ledger"]
    return {"streaming": ("peak SRAM (sum over cores)", f"{led['total_peak_bytes'] / 1024:.1f} KiB"),
            "whole-batch": ("whole-batch memory (one pool)",
                            f"{chip['pool']['whole_batch']['peak_bytes'] / 1024:.1f} KiB, chip-independent"),
            "pytorch": ("framework memory (PyTorch)", framework_words(summary.get("framework")))}


def mapping_words(mapping: dict) -> str:
    """'mapping.strategy fit', or the search's objective, layouts and time."""
    s = mapping.get("search")
    if not s:
        return f"mapping.strategy {mapping['strategy']}"
    how = ("all of them" if s["exhaustive"] else
           f"stopped by mapping.search_{s['stopped_by']}" if s.get("stopped_by") else "a local optimum")
    where = (f"; {s['placement']} placement, a split layer's replicated work on "
             f"{'the first slice, multicast' if s['shared_work'] == 'once' else 'every slice'}"
             if "placement" in s else "")
    return (f"mapping.strategy search, objective {s['objective']}: best of {s['layouts']} layouts in "
            f"{s['seconds']:.1f} s, {how}{where}")


def energy_words(chip: dict) -> str:
    """Energy per sample: dynamic (its parts) + static (powered cores, gating)."""
    ps, en = chip["energy"]["per_sample"], chip["energy"]
    parts = [("MAC", ps["mac_pj"]), ("vector", ps["vector_pj"]), ("SRAM", ps["sram_pj"]), ("NoC", ps["noc_pj"])]
    if ps.get("offchip_pj"):
        parts.append(("off-chip", ps["offchip_pj"]))
    dyn = ", ".join(f"{k} {v / 1e6:.3f}" for k, v in parts)
    total = ps["total_pj"]
    if chip["chip"].get("static_power_uw") is None:
        return f"{total / 1e6:.3f} µJ (dynamic only: {dyn}; static power not modelled, no leakage figures)"
    share = 100 * ps["static_pj"] / total if total else 0.0
    return (f"{total / 1e6:.3f} µJ = dynamic {ps['dynamic_pj'] / 1e6:.3f} ({dyn}) + static "
            f"{ps['static_pj'] / 1e6:.3f} ({share:.0f}%: {en['powered_cores']} cores leaking "
            f"{chip['chip']['static_power_uw'] / 1e3:.2f} mW over the step, power_gating "
            f"{chip['chip']['power_gating']})")


def area_words(chipinfo: dict) -> str:
    if chipinfo.get("area_mm2") is None:
        return "not given (chip.core.area_mm2, sram_area_mm2_per_kib)"
    b = chipinfo["area_breakdown_mm2"]
    return f"{chipinfo['area_mm2']:.1f} mm² of cores (logic {b['logic']:.1f}, SRAM {b['sram']:.1f})"


def offchip_words(chip: dict) -> str:
    """What the off-chip tier holds and carries, and its shares of the step's energy and latency."""
    od = chip.get("offchip")
    if not od:
        return "present (chip.offchip), unused: SRAM holds the step"
    share = od["latency_share"]
    return (f"{od['placed']}: {od['held_bytes'] / 2 ** 20:.2f} MiB held, "
            f"{od['traffic_bytes'] / 2 ** 20:.1f} MiB moved per step, {100 * od['energy_share']:.1f}% of the "
            f"step's energy, {100 * share:.1f}% of its latency (the step without off-chip time: "
            f"{od['latency_without_offchip_cycles'] / chip['chip']['clock_mhz']:.1f} µs)")


def headline(summary: dict) -> list:
    """(label, value) pairs shown on the console and at the top of report.md. The memory measure
    ``mapping.memory_mode`` names comes right after the accuracy, the other two in their places."""
    chip = summary["chip"]
    led, tim, en = chip["ledger"], chip["timing"], chip["energy"]
    mode = ((summary.get("config") or {}).get("mapping") or {}).get("memory_mode", "streaming")
    memory = _memory_rows(summary)
    out = []
    if summary.get("training"):
        t = summary["training"]
        out.append(("test accuracy", f"{100 * t['test_accuracy']:.2f}% after {t['epochs']} epoch(s) "
                                     f"({t['train_seconds']:.0f} s on this CPU)"))
    label, value = memory[mode]
    out.append((f"memory ({mode}, mapping.memory_mode)", f"{value}; {label}"))
    rest = [
        ("cores used", f"{chip['mapping']['cores_used']} of {chip['chip']['rows'] * chip['chip']['cols']} "
                       f"({mapping_words(chip['mapping'])})"),
        ("peak SRAM (worst core)", f"{led['peak_bytes'] / 1024:.1f} KiB of {led['capacity_bytes'] / 1024:.0f} KiB "
                                   f"(core {led['peak_core']})"),
        memory["streaming"],
        ("step latency", f"{tim['latency_us']:.1f} µs for {chip['samples']} samples"),
        ("throughput", f"{tim['throughput_samples_per_s']:.0f} samples/s at {chip['chip']['clock_mhz']:g} MHz"),
        ("energy per sample", energy_words(chip)),
        ("chip area", area_words(chip["chip"])),
        ("largest energy shares", ", ".join(f"{k} {100 * v / en['total_pj']:.0f}%"
                                            for k, v in list(en["by_op"].items())[:4]) if en["total_pj"] else "-"),
        ("NoC traffic", f"{sum(chip['noc']['tag_bytes'].values()) / 1024:.1f} KiB per step, "
                        f"{chip['noc']['byte_hops'] / 1024:.1f} KiB·hops"),
        memory["whole-batch"],
        memory["pytorch"],
    ]
    if chip.get("offchip") or (chip["chip"].get("offchip") is not None):
        rest.insert(4, ("off-chip memory", offchip_words(chip)))
    out += [row for row in rest if row is not memory[mode]]
    for mode, inf in (summary.get("inference") or {}).items():
        out.append((f"inference of one sample ({mode})",
                    f"{inf['latency_us']:.1f} µs, {inf['energy_pj'] / 1e6:.3f} µJ "
                    f"({inf['passes']} pass{'es' if inf['passes'] > 1 else ''})"))
    if summary.get("probe"):
        pr = summary["probe"]
        out.append(("probe phase (stage 2, after every epoch)",
                    f"{pr['per_epoch_latency_us'] / 1e3:.2f} ms, {pr['per_epoch_energy_pj'] / 1e6:.1f} µJ per epoch "
                    f"(encoding {pr['images']} images, {pr['head_epochs']} probe passes)"))
    return out


def by_op_rows(summary: dict) -> list:
    """Per work kind: energy over the step and core cycles (summed over cores), with shares of the total."""
    en, busy = summary["chip"]["energy"]["by_op"], summary["chip"]["timing"]["busy_cycles_by_op"]
    tot_e, tot_c = sum(en.values()) or 1.0, sum(busy.values()) or 1.0
    kinds = list(en) + [k for k in busy if k not in en]
    return [{"op kind": k, "energy (µJ/step)": f"{en.get(k, 0.0) / 1e6:.4f}",
             "energy share": f"{100 * en.get(k, 0.0) / tot_e:.1f}%",
             "core cycles": f"{busy.get(k, 0.0):.0f}", "cycle share": f"{100 * busy.get(k, 0.0) / tot_c:.1f}%"}
            for k in kinds]


def _subtitle(summary: dict) -> str:
    """The settings a figure was made with, for its title: rule, then chip, model, N, batch, dataflow,
    mapping, precision and scale (``labels``), then overrides."""
    if summary.get("labels"):
        from .labels import title_lines
        over = f"\n{' '.join(summary['overrides'])}" if summary.get("overrides") else ""
        return f"rule {summary['rule']}, " + title_lines(summary["labels"]) + over
    t = summary.get("training")
    scale = (f"{t['train_samples']} train images, {t['epochs']} epoch(s)" if t else "mapping only, no training")
    over = f"; {' '.join(summary['overrides'])}" if summary.get("overrides") else ""
    return f"{summary['rule']} on {summary['model']}, {summary['dataset']} ({scale}), seed {summary['seed']}{over}"


def write_run(out_dir: str, summary: dict, chip, history: list | None) -> dict:
    """Write every artefact of a run into ``out_dir``, all of them or none; returns name -> path."""
    name = summary["config_name"]
    cd = summary["chip"]
    sub = _subtitle(summary)
    last = history[-1] if history else None
    layer_rows = per_layer_rows(chip, last)
    with staged_dir(out_dir, last=("summary.json",)) as stage:
        def at(f):
            return os.path.join(stage, f)
        atomic_write(at("per_core.csv"), _csv(
            per_core_rows(chip), ["core", "row", "col", "layer", "layer_name", "units", "peak_bytes", "peak_pct",
                                  "busy_cycles", "busy_pct"] + [f"{c}_at_peak" for c in CATEGORIES]))
        cols = list(layer_rows[0].keys()) if layer_rows else []
        atomic_write(at("per_layer.csv"), _csv(layer_rows, cols))
        plots.sram_heatmap(cd, at("sram_heatmap.png"), f"{name}: peak SRAM per core\n{sub}")
        plots.link_traffic(cd, at("link_traffic.png"), f"{name}: NoC traffic per link, one step\n{sub}")
        plots.gantt(chip.gantt_rows(), chip.latency_cycles, chip.spec.clock_mhz, at("gantt.png"),
                    f"{name}: one training step per core\n{sub}", layer_names=_layer_names(chip))
        perfetto.write(chip, at(perfetto.NAME), f"{name}: one training step; {sub}")
        if history:
            plots.training_curve(history, at("training.png"), f"{name}: training\n{sub}")
        slim = dict(summary)
        slim["chip"] = {k: v for k, v in cd.items()}
        slim["chip"]["timing"] = {k: v for k, v in cd["timing"].items() if k != "gantt"}
        write_json(at("summary.json"), slim)
        atomic_write(at("report.md"), markdown(summary, chip, layer_rows, history))
        names = sorted(os.listdir(stage))
    return {n: os.path.join(out_dir, n) for n in names}


def _layer_names(chip) -> dict:
    return {layer.index: layer.name for layer in chip.mapping.layers}


ENERGY_PARTS = {"mac_pj": "MACs", "vector_pj": "vector unit", "sram_pj": "SRAM reads and writes", "noc_pj": "NoC (byte-hops)",
                "offchip_pj": "off-chip memory traffic", "dynamic_pj": "dynamic (the above)",
                "static_pj": "static (leakage over the step)", "total_pj": "total"}


def markdown(summary: dict, chip, layer_rows: list, history: list | None) -> str:
    cd = summary["chip"]
    command = summary.get("command", "run")
    lines = [f"# chipsim {command}: {summary['config_name']} ({summary['rule']})", "",
             f"Config `{summary['config_file']}`"
             + (f" with overrides `{' '.join(summary['overrides'])}`" if summary["overrides"] else "")
             + f"; model `{summary['model']}` ({summary['depth']} blocks); dataset `{summary['dataset']}`"
             + f"; precision W{summary['precision']['weight_bits']}/A{summary['precision']['activation_bits']}"
             + f"/G{summary['precision']['gradient_bits']}/U{summary['precision']['update_bits']}; seed "
             + f"{summary['seed']}.", ""]
    if summary.get("settings"):
        lines += [f"Settings: {summary['settings']}.", ""]
    if summary.get("labels"):
        from .labels import line
        lines += [f"Every figure and table below: {line(summary['labels'])}.", ""]
    t = summary.get("training")
    if t and t.get("resumed_after_epoch"):
        lines += [f"Resumed from a checkpoint after epoch {t['resumed_after_epoch']}; times count every epoch.", ""]
    lines += ["## Headline", ""]
    lines += [f"- **{k}**: {v}" for k, v in headline(summary)]
    lines += ["", f"Scale: {summary['scale_note']}", ""]
    if history:
        lines += ["## Training", "", _md_table(
            [{"epoch": h["epoch"], "loss": f"{h['loss']:.4f}", "test accuracy": f"{100 * h['test_accuracy']:.2f}%",
              "per-block accuracy": " / ".join(f"{100 * a:.1f}" for a in h["per_block_accuracy"])
              if h.get("per_block_accuracy") else "-", "seconds": f"{h['seconds']:.1f}"} for h in history],
            ["epoch", "loss", "test accuracy", "per-block accuracy", "seconds"]), "![training](training.png)", ""]
    lines += ["## Mapping", "", _md_table(chip.mapping_table(),
                                           ["layer", "name", "units", "slices", "cores", "peak_kib", "sram_pct",
                                            "top", "busy_pct"]), "",
              f"Forward activation traffic: {cd['mapping']['activation_hops_per_sample']} hops per sample.", "",
              "![SRAM per core](sram_heatmap.png)", "",
              "## Memory by category (sum over cores, each core at its own peak)", "",
              _md_table([{"category": c, "KiB": f"{v / 1024:.1f}"} for c, v in cd["ledger"]["totals_by_category"].items()
                         if v], ["category", "KiB"]), "",
              f"Micro-batch {cd['micro_batch']}. Chip-independent whole-batch demand (every tensor of the batch "
              f"in one pool, the GPU-style measure): {cd['pool']['whole_batch']['peak_bytes'] / 1024:.1f} KiB; "
              f"framework memory (`mapping.memory_mode: pytorch`): {framework_words(summary.get('framework'))}.",
              "",
              "## Work per layer and sample", "", _md_table(layer_rows, list(layer_rows[0].keys())), "",
              "## Timing", "",
              f"One step of {cd['samples']} samples takes {cd['timing']['latency_cycles']:.0f} cycles "
              f"({cd['timing']['latency_us']:.1f} µs). Critical path (last 8 ops):", ""]
    for c in cd["timing"]["critical_path"][-8:]:
        when = ("once per step" if c["instance"] is None else
                f"sample {c['instance']}" if cd["micro_batch"] == 1 else f"micro-batch {c['instance']}")
        lines.append(f"- layer {c['layer']} `{c['op']}` ({c['kind']}, {when}): "
                     f"{c['start']:.0f} → {c['end']:.0f} cycles, gated by {c['gated_by']}")
    lines += ["", "![Gantt](gantt.png)", "",
              f"The same schedule, zoomable, with every op's MACs, bytes and pJ and every transfer as an arrow: "
              f"open `{perfetto.NAME}` at https://ui.perfetto.dev (Open trace file) or in chrome://tracing.", "",
              "## NoC", "",
              _md_table([{"tag": k, "KiB per step": f"{v / 1024:.1f}"} for k, v in cd["noc"]["tag_bytes"].items()],
                        ["tag", "KiB per step"]), "", "![links](link_traffic.png)", "",
              "## Energy per sample", "",
              _md_table([{"part": ENERGY_PARTS.get(k, k), "µJ": f"{v / 1e6:.4f}"}
                         for k, v in cd["energy"]["per_sample"].items()], ["part", "µJ"]), "",
              "## Energy and cycles by op kind (one step)", "",
              "Every kernel the engine executed, priced per unit and width (`chipsim/trace/work.py`); SRAM and NoC "
              "energy are their own rows. Cycles are core cycles summed over the cores.", "",
              _md_table(by_op_rows(summary), ["op kind", "energy (µJ/step)", "energy share", "core cycles",
                                              "cycle share"]), ""]
    if summary.get("inference"):
        lines += ["## Inference of one sample", "", "On the training mapping; every kernel the engine ran for it.",
                  "", _md_table([{"mode": mode, "passes": inf["passes"], "latency (µs)": f"{inf['latency_us']:.1f}",
                                  "energy (µJ)": f"{inf['energy_pj'] / 1e6:.4f}"}
                                 for mode, inf in summary["inference"].items()],
                                ["mode", "passes", "latency (µs)", "energy (µJ)"]), ""]
    if summary.get("probe"):
        lines += probe_section(summary)
    if summary.get("provenance"):
        from .provenance import markdown as provenance_markdown
        lines += provenance_markdown(summary["provenance"])
    return "\n".join(lines)


def probe_section(summary: dict) -> list:
    """The probe phase (a linear probe's second stage, refit after every epoch): its cost per epoch beside
    the training's (``runner.cost_probe``)."""
    pr, cd, t = summary["probe"], summary["chip"], summary.get("training") or {}
    epochs = t.get("epochs") or 0
    steps = t["steps"] / epochs if epochs else None
    nb = pr["encode_batches_per_epoch"]
    rows = [{"part": f"encode {pr['images']} training images ({nb} batch{'es' if nb != 1 else ''} of "
                     f"{pr['encode']['samples']})", "latency (µs)": f"{pr['encode']['per_epoch_latency_us']:.1f}",
             "energy (µJ)": f"{pr['encode']['per_epoch_energy_pj'] / 1e6:.2f}"},
            {"part": f"train the probe: {pr['head_epochs']} passes, {pr['probe_steps_per_epoch']} steps of "
                     f"{pr['train']['samples']} in all", "latency (µs)": f"{pr['train']['per_epoch_latency_us']:.1f}",
             "energy (µJ)": f"{pr['train']['per_epoch_energy_pj'] / 1e6:.2f}"},
            {"part": "probe phase, per epoch", "latency (µs)": f"{pr['per_epoch_latency_us']:.1f}",
             "energy (µJ)": f"{pr['per_epoch_energy_pj'] / 1e6:.2f}"}]
    lines = ["## Probe phase (stage 2, after every epoch)", "",
             "The frozen encoder encodes the training set, then the linear probe trains on those features; "
             "the engine ran one batch of each, the chip costed it on the training mapping, and an epoch's "
             "figures are those times their counts.", "",
             _md_table(rows, ["part", "latency (µs)", "energy (µJ)"]), ""]
    if steps:
        train_e = steps * cd["energy"]["total_pj"]
        train_l = steps * cd["timing"]["latency_us"]
        lines += [f"Stage 1 takes {steps:.0f} steps an epoch: {train_e / 1e6:.2f} µJ and {train_l:.1f} µs. The probe "
                  f"phase adds {100 * pr['per_epoch_energy_pj'] / train_e:.1f}% to that energy and "
                  f"{100 * pr['per_epoch_latency_us'] / train_l:.1f}% to that latency.", ""]
    lines += [f"The encoded features of the whole training set ({pr['feature_bytes'] / 1024:.1f} KiB, float32) "
              "are held between the two parts; the SRAM ledger above does not include them.", ""]
    return lines
