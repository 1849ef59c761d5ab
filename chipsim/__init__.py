"""chipsim: a simulator of a many-core chip that learns on chip.

The public API mirrors the command line: every ``chipsim <command>`` is a thin
layer over the function of the same name here.
"""
__version__ = "0.1.0"

from .api import compare, explore, map, reproduce, run, sweep, validate  # noqa: E402,A004  (public API; see chipsim/api.py)

__all__ = ["compare", "explore", "map", "reproduce", "run", "sweep", "validate", "__version__"]
