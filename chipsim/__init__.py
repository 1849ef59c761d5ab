"""chipsim: a simulator of a many-core chip that learns on chip.

The public API mirrors the command line: every ``chipsim <command>`` is a thin
layer over the function of the same name here.
"""
__version__ = "0.1.0"


def _ignore_ctrl_c_in_a_spawned_worker() -> None:
    """A worker process that ``--jobs N`` spawns imports chipsim first (as its parent's main module): from
    here on it ignores SIGINT. A Ctrl-C at the terminal reaches the whole process group; the parent alone
    handles it (the resume hint, exit 130) and its workers die with it, instead of each printing a
    KeyboardInterrupt traceback of its own."""
    import sys
    process = sys.modules.get("multiprocessing.process")
    if process is not None and getattr(process.current_process(), "_inheriting", False):
        import signal
        signal.signal(signal.SIGINT, signal.SIG_IGN)


_ignore_ctrl_c_in_a_spawned_worker()

from .api import compare, map, reproduce, run, sweep, validate  # noqa: E402,A004  (public API; see chipsim/api.py)

__all__ = ["compare", "map", "reproduce", "run", "sweep", "validate", "__version__"]
