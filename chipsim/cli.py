"""The ``chipsim`` command line.

Structure: each subcommand is a :class:`Command` in :data:`COMMANDS` with a
one-line ``summary`` (shown by ``chipsim --help``), a ``configure`` function
that adds its arguments, and a ``run`` function that calls the Python API
function of the same name (``chipsim.api``) and prints the result. To add a
command, write those two small functions and append one ``Command`` entry.

Errors: a ``ChipsimError`` (bad config, missing data, model does not fit ...)
is printed as ONE line ``chipsim: error: <message>`` on stderr with exit code
2; argparse usage errors also exit 2; Ctrl-C exits 130. Anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

from . import __version__
from .errors import ChipsimError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


# ---------------------------------------------------------------- shared options
def add_set_option(parser: argparse.ArgumentParser) -> None:
    """``--set key.path=value`` (repeatable): override any config key; the value is YAML."""
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
        help="override a config key, e.g. --set precision.weight_bits=8 (repeatable; "
             "the value is parsed as YAML)")


def add_out_option(parser: argparse.ArgumentParser, default: str | None = None) -> None:
    """``--out DIR``: where a command that writes results puts them."""
    parser.add_argument(
        "--out", metavar="DIR", default=default,
        help="directory to write results to" + (f" (default: {default})" if default else ""))


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
    print(f"ok: {loaded.name}: {hw.chip.mesh.rows}x{hw.chip.mesh.cols} mesh, "
          f"{loaded.model.depth} blocks, rule {hw.workload.rule}")
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
    Command("validate", "check an hwconfig (and its model file) and print it fully resolved",
            _configure_validate, cmd_validate,
            example="chipsim validate hwconfigs/44core_4bit.yaml --set precision.weight_bits=8\n"
                    "  chipsim validate --reference > docs/config-reference.md"),
]

EPILOG = """\
example:
  chipsim validate hwconfigs/44core_4bit.yaml --set training.epochs=1

Every command is also a Python function: `chipsim.<command>(...)`.
Run `chipsim <command> --help` for its options."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chipsim",
        description="Simulate a many-core edge chip that learns on chip (BP, FF, SymBa, DF-O, DF-R).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"chipsim {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    sub.required = True
    for cmd in COMMANDS:
        p = sub.add_parser(cmd.name, help=cmd.summary, description=cmd.summary[:1].upper() + cmd.summary[1:] + ".",
                           epilog=f"example:\n  {cmd.example}" if cmd.example else None,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.configure(p)
        p.set_defaults(run=cmd.run, parser=p)
    return parser


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``chipsim`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        return args.run(args)
    except ChipsimError as exc:
        sys.stdout.flush()
        print(f"chipsim: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("chipsim: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # argparse: --help/--version (0) and usage errors (2)
        if exc.code is None:
            return EXIT_OK
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    except BrokenPipeError:  # e.g. `chipsim validate --reference | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
