"""The ``chipsim`` command line.

Structure: each subcommand is a :class:`Command` in :data:`COMMANDS` with a
one-line ``summary`` (shown by ``chipsim --help``), a ``configure`` function
that adds its arguments, and a ``run`` function that calls the Python API
function of the same name (``chipsim.api``) and prints the result. To add a
command, write those two small functions and append one ``Command`` entry.

Errors: a ``ChipsimError`` (bad config, missing data, model does not fit,
unusable output path, damaged checkpoint ...) is printed as ONE line
``chipsim: error: <message>`` on stderr with exit code 2; argparse usage
errors also exit 2; Ctrl-C exits 130 and prints how to resume (``run``: the
exact ``--resume`` command). Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from . import __version__, terminal
from .errors import ChipsimError, interrupt_of

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130
MAX_MESSAGE = 2000         # characters: a message quoting user input must still be one readable line


# ---------------------------------------------------------------- shared options
def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set key.path=value`` (repeatable): override any config key; the value is YAML."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override a config key, e.g. --set precision.weight_bits=8 (repeatable; "
             "the value is parsed as YAML)")


def add_out_option(parser: argparse.ArgumentParser, shown_default: str | None = None) -> None:
    """``--out DIR``: where a command that writes results puts them (None: the command picks a fresh one)."""
    parser.add_argument(
        "--out", metavar="DIR", default=None,
        help="directory to write results to" + (f" (default: {shown_default})" if shown_default else ""))


def add_cluster_option(parser: argparse.ArgumentParser) -> None:
    """``--cluster ADDRESS|local``: run the command's independent points on a Dask cluster."""
    parser.add_argument(
        "--cluster", metavar="ADDRESS", default=None,
        help="run the points on a Dask cluster: a scheduler address (tcp://host:8786, started with "
             "`dask scheduler`), or 'local' to start a LocalCluster of --jobs workers (default: a local "
             "process pool)")


# ---------------------------------------------------------------- validate
def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", nargs="?", metavar="FILE", help="hwconfig YAML file, e.g. hwconfigs/44core_4bit.yaml")
    add_set_option(p)
    p.add_argument("--reference", action="store_true",
                   help="print the reference of every config and model-file key (Markdown) and exit")


def cmd_validate(args: argparse.Namespace) -> int:
    from . import api

    if args.reference:
        if args.file or args.overrides:
            args.parser.error("--reference takes no FILE or --set")
        sys.stdout.write(api.config_reference())
        return EXIT_OK
    if not args.file:
        args.parser.error("FILE is required (or use --reference)")
    import yaml

    loaded = api.validate(args.file, args.overrides)
    sys.stdout.write(yaml.safe_dump(loaded.to_dict(), sort_keys=False, default_flow_style=False))
    hw = loaded.hw
    # the summary goes to stderr so `chipsim validate x.yaml > resolved.yaml` stays valid YAML
    print(f"ok: {loaded.name}: {hw.chip.mesh.rows}x{hw.chip.mesh.cols} mesh, "
          f"{loaded.model.depth} blocks, rule {hw.workload.rule}", file=sys.stderr)
    return EXIT_OK


def _print_table(rows: list, columns: list) -> None:
    """A compact fixed-width table on stdout."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def _print_result(result) -> None:
    from .report import headline
    print()
    _print_table(result.chip.mapping_table(), ["layer", "name", "units", "slices", "cores", "peak_kib",
                                               "sram_pct", "busy_pct", "top"])
    print()
    for label, value in headline(result.summary):
        print(f"{label:>28}: {value}")
    if result.out_dir:
        print(f"\nreport: {os.path.join(result.out_dir, 'report.md')}")


def _configure_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file, e.g. hwconfigs/44core_4bit.yaml")
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-<timestamp>/")
    p.add_argument("--rule", help="shorthand for --set workload.rule=RULE (bp, ff, symba, df, df-o, df-r, "
                                   "cwc, cff; any case)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from its last checkpoint, "
                   "in its run directory (the config must match; more training.epochs is allowed)")
    p.add_argument("--quiet", action="store_true", help="no start line, progress bar or per-epoch lines")


def cmd_run(args: argparse.Namespace) -> int:
    from . import api
    result = api.run(args.config, args.overrides, rule=args.rule, out_dir=args.out, progress=not args.quiet,
                     resume=args.resume)
    _print_result(result)
    return EXIT_OK


def _configure_map(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file")
    p.add_argument("--model", help="shorthand for --set workload.model=FILE")
    p.add_argument("--rule", help="shorthand for --set workload.rule=RULE")
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-map-<timestamp>/")


def cmd_map(args: argparse.Namespace) -> int:
    from . import api
    result = api.map(args.config, args.overrides, rule=args.rule, model=args.model, out_dir=args.out)
    _print_result(result)
    return EXIT_OK


def _csv_list(text: str, arg: str, cast=str, what: str = "values") -> list:
    """``"a, b,c"`` -> [cast(a), cast(b), cast(c)]; a value ``cast`` refuses is one line naming ``arg``."""
    from .safe_yaml import clip
    out = []
    for t in text.split(","):
        if not t.strip():
            continue
        try:
            out.append(cast(t.strip()))
        except ValueError:
            raise ChipsimError(f"{arg} {clip(text, 80)}: {clip(t.strip(), 40)!r} is not one of the {what}; "
                               f"expected a comma-separated list of {what}") from None
    return out


def _configure_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG",
                   help="chip + workload file (its model is replaced by the depth family, unless --own-model)")
    p.add_argument("--rules", default="bp,df-o,df-r", help="comma-separated rules (default: bp,df-o,df-r)")
    p.add_argument("--depths", default=None, help="comma-separated block counts (default: 5,8,11,15,20,25)")
    p.add_argument("--own-model", action="store_true",
                   help="compare on the config's own model (workload.model) instead of the depth family")
    p.add_argument("--width", type=int, default=32, help="conv channels of the depth family (default: 32)")
    p.add_argument("--pools", default="0,1", help="conv blocks of the depth family followed by a 2x2 max-pool "
                   "(default: 0,1); the input shape is the dataset's (--set workload.dataset=cifar10)")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes, >= 1 (default: all cores)")
    p.add_argument("--device", default="cpu", help="where the framework figure is measured in PyTorch: cpu "
                   "(torch.profiler memory events), cuda (torch.cuda.max_memory_allocated) or none (default: cpu)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-compare-<timestamp>/; rerun with the same --out to resume")


def cmd_compare(args: argparse.Namespace) -> int:
    from . import api
    if args.own_model and args.depths is not None:
        raise ChipsimError("compare: give --depths (the depth family) or --own-model, not both")
    depths = _csv_list("5,8,11,15,20,25" if args.depths is None else args.depths, "--depths", int, "integers")
    table = api.compare(args.config, _csv_list(args.rules, "--rules", what="rules"), depths, args.overrides,
                        width=args.width, out_dir=args.out, jobs=args.jobs, own_model=args.own_model,
                        cluster=args.cluster,
                        pools=_csv_list(args.pools, "--pools", int, "integers"),
                        device=None if args.device == "none" else args.device)
    rows = []
    for r in table["rows"]:
        m, wb = r["streaming"], r["whole-batch"]
        rows.append({"depth": r["depth"], "rule": r["rule"], "cores": m.get("cores_used", "no fit"),
                     "SRAM KiB": round(m["total_peak_bytes"] / 1024) if m.get("fits") else "-",
                     "whole-batch KiB": round(wb["total_peak_bytes"] / 1024) if wb.get("fits") else "-",
                     "pytorch KiB": round(r["pytorch"]["total_peak_bytes"] / 1024) if r["pytorch"].get("fits") else "-",
                     "measured KiB": round(r["measured"]["total_peak_bytes"] / 1024)
                     if r.get("measured", {}).get("fits") else "-",
                     "step us": round(m["latency_us"]) if m.get("fits") else "-",
                     "backward us": round(m["backward_us"]) if m.get("fits") else "-",
                     "uJ/sample": round(m["energy_per_sample_pj"] / 1e6, 2) if m.get("fits") else "-"})
    _print_table(rows, list(rows[0]))
    from .experiments.compare import ratio_lines
    print()
    for line in ratio_lines(table):
        print(line)
    return EXIT_OK


def _configure_sweep(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file")
    p.add_argument("--rules", default="bp,df-o", help="comma-separated rules (default: bp,df-o)")
    p.add_argument("--noise", default="", help="noise kinds: shot, impulse (test inputs), mismatch (training "
                   "gradients, per core), read, stuck (weights at inference)")
    p.add_argument("--levels", default="0-5", help="noise levels, a range or list (default: 0-5)")
    p.add_argument("--bits", default="", help="bit widths for weights and activations, e.g. 32,8,6,4,3,2")
    p.add_argument("--negatives", default="", help="numbers of negatives, e.g. 1,3,9,avg")
    p.add_argument("--seeds", default="0", help="seeds, for error bars (default: 0)")
    p.add_argument("--gain-std", type=float, default=0.0, help="fixed per-core gain error (std, >= 0) with "
                   "--noise mismatch")
    p.add_argument("--jobs", type=int, default=None, help="parallel trainings, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-sweep-<timestamp>/; rerun with the same --out to resume")


def _negative(text: str):
    return "avg" if text.lower() == "avg" else int(text)


def cmd_sweep(args: argparse.Namespace) -> int:
    from . import api
    from .experiments.sweep import parse_levels
    table = api.sweep(args.config, _csv_list(args.rules, "--rules", what="rules"),
                      _csv_list(args.noise, "--noise", what="noise kinds"), parse_levels(args.levels),
                      _csv_list(args.bits, "--bits", int, "bit widths"),
                      _csv_list(args.negatives, "--negatives", _negative, "integers or avg"),
                      _csv_list(args.seeds, "--seeds", int, "integers"), args.overrides,
                      out_dir=args.out, jobs=args.jobs, gain_std=args.gain_std,
                      cluster=args.cluster)
    from .experiments.sweep import markdown
    print(markdown(table))
    return EXIT_OK


def _configure_table(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Train each rule of --rules once per seed of --seeds on the config's model and chip (every "
        "training in parallel, like any experiment), then write table.md, table.json, accuracy.png and "
        "points.jsonl: accuracy as mean ± sample standard deviation over the seeds and each seed's, beside "
        "the chip's SRAM (sum over cores, worst core, whole-batch), cores, step latency and energy per "
        "sample of one training step, and each rule's ratio to bp on the same model and chip. The most "
        "accurate rule is named only when at least 2 seeds separate it from the next by more than their "
        "spread. The scale is the config's (--set training.epochs=..., workload.train_limit=...); rerun "
        "with the same --out to resume.")
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file (its model, dataset and scale)")
    p.add_argument("--rules", default="bp,df-o,df-r", help="comma-separated rules (default: bp,df-o,df-r)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds, at least 2 for a spread "
                   "(default: 0,1,2)")
    p.add_argument("--jobs", type=int, default=None, help="parallel trainings, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-table-<timestamp>/; rerun with the same --out to resume")


def cmd_table(args: argparse.Namespace) -> int:
    from . import api
    t = api.table(args.config, _csv_list(args.rules, "--rules", what="rules"),
                  _csv_list(args.seeds, "--seeds", int, "integers"), args.overrides, out_dir=args.out,
                  jobs=args.jobs, cluster=args.cluster)
    from .experiments.table import markdown
    print(markdown(t))
    return EXIT_OK


def _configure_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="minutes-long smoke version (what CI runs)")
    p.add_argument("--no-ladder", action="store_true", help="leave out the budget ladder (the ranked rules "
                   "retrained at 10 and 30 epochs, hours at the full scale); the report says it was not run")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    add_cluster_option(p)
    add_out_option(p, "reports/ (or a temp-like reports/runs/quick-<timestamp>/ with --quick)")


def cmd_reproduce(args: argparse.Namespace) -> int:
    from . import api, rundir
    if args.jobs is not None and args.jobs < 1:
        raise ChipsimError(f"--jobs {args.jobs}: must be >= 1 (or leave it out to use every core)")
    out = args.out or (rundir.new_default("quick") if args.quick else "reports")
    api.reproduce(out_dir=out, quick=args.quick, jobs=args.jobs, cluster=args.cluster, ladder=not args.no_ladder)
    print(f"report: {os.path.join(out, 'README.md')}")
    return EXIT_OK


def _configure_explore(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", metavar="HWCONFIG", help="chip + workload file: the base every trial changes")
    p.add_argument("--space", required=True, metavar="SPACE.yaml",
                   help="config keys to search, with their choices or ranges (see spaces/ and docs/explore.md)")
    p.add_argument("--objectives", default="accuracy,train_energy,peak_sram",
                   help="comma-separated: accuracy, train_energy, inference_energy, latency, peak_sram, "
                        "total_sram, sram_used (default: accuracy,train_energy,peak_sram)")
    p.add_argument("--noise", default=None, metavar="KIND:LEVEL",
                   help="measure accuracy under test-time noise, e.g. shot:3 (shot, impulse, read, stuck; 1-5)")
    p.add_argument("--sampler", default="nsga2", choices=("nsga2", "tpe", "random", "grid"),
                   help="search algorithm (default: nsga2; grid: every point of a small finite space); random search at the same budget is run beside it as "
                        "the baseline unless --no-baseline")
    p.add_argument("--no-baseline", action="store_true", help="do not run random search beside the sampler")
    p.add_argument("--trials", type=int, default=24, help="finished trials per study (default: 24)")
    p.add_argument("--search-seeds", default="0", help="sampler seeds: one study per seed and sampler (default: 0)")
    p.add_argument("--population", type=int, default=None,
                   help="NSGA-II population (default: trials/4, between 4 and 50)")
    p.add_argument("--train-limit", type=int, default=None, help="training samples per trial (default: the config's)")
    p.add_argument("--test-limit", type=int, default=None, help="test samples per trial (default: the config's)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per trial (default: the config's)")
    p.add_argument("--seeds", default="0", help="training seeds per trial; accuracy is their mean (default: 0)")
    p.add_argument("--prune-margin", type=float, default=0.1,
                   help="stop a trial after its first epoch if its accuracy plus this (0.1 = 10 points) is still "
                        "dominated by the front (default: 0.1)")
    p.add_argument("--reeval-seeds", type=int, default=3,
                   help="re-train each Pareto point on this many seeds (default: 3; 0: skip)")
    p.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna storage shared by several machines, e.g. postgresql://host/db (default: "
                        "sqlite:///OUT/study.db)")
    p.add_argument("--jobs", type=int, default=None, help="trials evaluated in parallel, >= 1 (default: all cores)")
    add_cluster_option(p)
    add_set_option(p)
    add_out_option(p, "reports/runs/<config>-explore-<timestamp>/; rerun with the same --out to resume")
    p.add_argument("--quiet", action="store_true", help="no start line or per-trial lines")


def cmd_explore(args: argparse.Namespace) -> int:
    from . import api
    table = api.explore(args.config, args.space, _csv_list(args.objectives, "--objectives", what="objectives"),
                        args.sampler, args.trials, args.overrides, out_dir=args.out, jobs=args.jobs,
                        progress=not args.quiet, cluster=args.cluster, noise=args.noise,
                        baseline=not args.no_baseline,
                        search_seeds=_csv_list(args.search_seeds, "--search-seeds", int, "integers"),
                        population=args.population, train_limit=args.train_limit, test_limit=args.test_limit,
                        epochs=args.epochs, seeds=_csv_list(args.seeds, "--seeds", int, "integers"),
                        prune_margin=args.prune_margin, reeval_seeds=args.reeval_seeds, storage=args.storage)
    c = table["counts"]
    print(f"\n{c['finished']} trials: {c['ok']} feasible, {c['infeasible']} infeasible, {c['pruned']} pruned; "
          f"{len(table['front'])} on the Pareto front")
    print(f"report: {os.path.join(table['out_dir'], 'explore.md')}")
    from .experiments.explore.report import shown_storage
    print(f"dashboard: optuna-dashboard {shown_storage(table['storage'])}")
    return EXIT_OK


# ---------------------------------------------------------------- registry
@dataclass(frozen=True)
class Command:
    name: str
    summary: str                                         # one line, shown by `chipsim --help`
    configure: Callable[[argparse.ArgumentParser], None]  # adds the command's arguments
    run: Callable[[argparse.Namespace], int]             # calls the API, prints, returns exit code
    example: str = ""                                    # shown in the command's --help epilog


COMMANDS: list[Command] = [
    Command("run", "train a model with a learning rule on the modelled chip; report accuracy, SRAM, "
            "NoC, latency and energy", _configure_run, cmd_run,
            example="chipsim run hwconfigs/44core_4bit.yaml --rule bp --set training.epochs=2"),
    Command("map", "map a model onto the chip and cost one training step (no training): cores, SRAM, "
            "NoC, timing", _configure_map, cmd_map,
            example="chipsim map hwconfigs/44core_4bit.yaml --model models/cnn10.yaml --rule bp"),
    Command("compare", "BP vs local rules as depth grows: SRAM, latency, NoC, energy (the paper's Fig. 4A-B)",
            _configure_compare, cmd_compare,
            example="chipsim compare hwconfigs/176core_512k.yaml --rules bp,df-o,df-r --depths 5,8,11,15,20,25"),
    Command("sweep", "accuracy vs noise level, bit width or number of negatives (Fig. 4C-E, S3, Table 2)",
            _configure_sweep, cmd_sweep,
            example="chipsim sweep hwconfigs/44core_4bit.yaml --noise shot,impulse --levels 0-5 --rules bp,df-o"),
    Command("table", "train several rules over several seeds on one model and chip: accuracy (mean ± sd) "
            "beside SRAM, latency and energy", _configure_table, cmd_table,
            example="chipsim table hwconfigs/44core_4bit.yaml --rules bp,df-o,df-r --seeds 0,1,2"),
    Command("explore", "search rule, bit widths, dataflow and chip for the Pareto front of accuracy, energy, "
            "latency and SRAM (Optuna)", _configure_explore, cmd_explore,
            example="chipsim explore hwconfigs/44core_4bit.yaml --space spaces/rules_bits.yaml --trials 16 "
                    "--train-limit 500 --epochs 1"),
    Command("reproduce", "regenerate every table and figure under reports/, beside the paper's numbers",
            _configure_reproduce, cmd_reproduce, example="chipsim reproduce --quick"),
    Command("validate", "check an hwconfig (and its model file) and print it fully resolved",
            _configure_validate, cmd_validate,
            example="chipsim validate hwconfigs/44core_4bit.yaml --set precision.weight_bits=8\n"
                    "  chipsim validate --reference > docs/config-reference.md"),
]

EPILOG = """\
examples:
  chipsim run hwconfigs/44core_4bit.yaml                 # train DF-R at 4 bits on mnist5k (offline)
  chipsim map hwconfigs/44core_4bit.yaml --rule bp       # where BP's memory goes, no training
  chipsim validate hwconfigs/44core_4bit.yaml --set training.epochs=1

Every command is also a Python function: `chipsim.<command>(...)`.
Run `chipsim <command> --help` for its options."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is ONE line (naming the argument) plus where to look, like every other error."""

    def error(self, message):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chipsim",
        description="Simulate a many-core edge chip that learns on chip (BP, FF, SymBa, DF-O, DF-R).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chipsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", parser_class=_Parser)
    sub.required = True
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.summary[:1].upper() + cmd.summary[1:] + ".",
                           epilog=f"example:\n  {cmd.example}" if cmd.example else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.configure(p)
        p.set_defaults(run=cmd.run, parser=p)
    return parser


def _one_line(message: str) -> str:
    text = " ".join(part.strip() for part in str(message).splitlines() if part.strip())
    return text if len(text) <= MAX_MESSAGE else f"{text[:MAX_MESSAGE]}... ({len(text):,} characters)"


def _utf8_arguments(argv: list) -> list:
    """Refuse arguments that are not UTF-8 text (bytes a shell passed through): file names, values and
    titles made from them would fail much later, in a plot's font renderer or a print."""
    for arg in argv:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
            raise ChipsimError(f"argument {shown!r} is not valid UTF-8; give file names and values as UTF-8 "
                               "text") from None
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chipsim`` console script; returns the exit code."""
    import warnings
    as_program = argv is None
    terminal.prepare(as_program)
    # numpy's overflow/invalid warnings precede a TrainingDiverged line that says what happened, and why
    warnings.filterwarnings("ignore", category=RuntimeWarning, message=r".*(overflow|invalid value|divide by "
                            r"zero) encountered")
    parser = build_parser()
    try:
        argv = _utf8_arguments(sys.argv[1:] if argv is None else list(argv))
        args = parser.parse_args(argv)
        rc = args.run(args)
        if as_program:
            terminal.finished()
        sys.stdout.flush()
        return rc
    except ChipsimError as exc:
        if as_program:
            terminal.finished()
        terminal.flush_stdout()
        print(f"chipsim: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (KeyboardInterrupt, SystemError) as exc:
        interrupt = interrupt_of(exc)
        if interrupt is None:
            raise
        terminal.flush_stdout()
        hint = getattr(interrupt, "resume_hint", None)
        print("chipsim: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
        if as_program:
            terminal.exit_now(EXIT_INTERRUPTED)     # not 130 otherwise, at times: see terminal.exit_now
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse: --help/--version (0) and usage errors (2)
        terminal.flush_stdout()
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `chipsim validate --reference | head`
        terminal.silence_stdout()
        return EXIT_OK
    except OSError as exc:
        if exc.errno not in terminal.STDOUT_ERRORS:
            raise
        # writing the results to stdout failed (`> /dev/full`); the files a command writes report their own
        # errors as OutputError lines
        terminal.silence_stdout()
        print(f"chipsim: error: cannot write to standard output: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
