"""Options and argument helpers shared by every ``chipsim`` subcommand: their own module so that
``cli`` (the registry and ``main``) and ``cli_experiments`` (the experiment commands) both import
them without importing each other."""
from __future__ import annotations

import argparse

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


def _print_table(rows: list, columns: list) -> None:
    """A compact fixed-width table on stdout."""
    widths = [max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(str(r.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


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
