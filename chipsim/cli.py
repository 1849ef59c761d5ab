"""The ``chipsim`` command line.

Structure: each subcommand is a :class:`Command` in :data:`COMMANDS` with a
one-line ``summary`` (shown by ``chipsim --help``), a ``configure`` function
that adds its arguments, and a ``run`` function that calls the Python API
function of the same name (``chipsim.api``) and prints the result. To add a
command, write those two small functions and append one ``Command`` entry.
The experiment commands' two functions live in ``cli_experiments``, the options
every command shares (``--set``, ``--out``, ``--cluster``) in ``cli_options``.

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
from .cli_experiments import (_configure_compare, _configure_explore, _configure_reproduce, _configure_sweep,
                              _configure_table, cmd_compare, cmd_explore, cmd_reproduce, cmd_sweep, cmd_table)
from .cli_options import (EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR, _csv_list, _print_table,  # noqa: F401
                          add_cluster_option, add_out_option, add_set_option)
from .errors import ChipsimError, interrupt_of

MAX_MESSAGE = 2000         # characters: a message quoting user input must still be one readable line


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
