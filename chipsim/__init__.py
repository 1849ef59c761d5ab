"""chipsim: a simulator of a many-core chip that learns on chip.

The public API mirrors the command line: every ``chipsim <command>`` is a thin
layer over the function of the same name here.
"""
__version__ = "0.1.0"


def _ignore_ctrl_c_in_a_spawned_worker() -> None:
    """A worker process that ``--jobs N`` spawns imports chipsim first (as its parent's main module).

    From here on it ignores SIGINT: a Ctrl-C at the terminal reaches the whole process group, and the
    parent alone answers it (the resume hint, exit 130) instead of each worker printing a traceback of its
    own. And it dies with its parent (Linux: ``PR_SET_PDEATHSIG``, SIGKILL when the thread that spawned it
    ends -- a LocalCluster's event loop, a pool's owner), even while it is still starting and reading its
    task from the parent, which would otherwise end in an EOFError traceback when the parent is gone.
    """
    import sys
    process = sys.modules.get("multiprocessing.process")
    if process is None or not getattr(process.current_process(), "_inheriting", False):
        return
    import os
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        import ctypes
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)   # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            return
        if os.getppid() == 1:          # the parent died before the line above: nothing will kill this one
            os._exit(1)


_ignore_ctrl_c_in_a_spawned_worker()

from .api import compare, explore, map, reproduce, run, sweep, table, validate  # noqa: E402,A004  (public API; see chipsim/api.py)

__all__ = ["compare", "explore", "map", "reproduce", "run", "sweep", "table", "validate", "__version__"]
