"""Point functions for tests/test_cluster.py, in a module of their own so that a Dask worker process
(which has tests/ on its PYTHONPATH) imports them without importing the tests themselves."""
import os
import signal
import time


def die_as_told(p: dict) -> dict:
    """``p["die"]``: "never" returns, "always" kills its worker, "once" kills it unless ``p["marker"]`` exists.

    SIGKILL, not an exception: the worker process vanishes mid-task, as when a machine is lost. It
    dies a little while into the task, as a training would, not in the instant its worker picks it up.
    """
    if p["die"] == "always" or (p["die"] == "once" and not os.path.exists(p["marker"])):
        if p["die"] == "once":
            open(p["marker"], "w").close()
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": len(p["key"]), "pid": os.getpid()}


def notes(p: dict) -> dict:
    """Sends ``p["notes"]`` progress notes (as the training loop does each epoch), a little apart."""
    from chipsim import progress
    for i in range(p["notes"]):
        progress.note(f"epoch {i + 1}/{p['notes']}", force=True)
        time.sleep(0.2)
    return {"value": p["notes"], "pid": os.getpid()}


def blocked_signals(p: dict) -> dict:
    """The signals this worker process's thread blocks (Linux: /proc's SigBlk mask), and its pid."""
    import threading
    with open(f"/proc/{os.getpid()}/task/{threading.get_native_id()}/status") as fh:
        mask = next(int(line.split()[1], 16) for line in fh if line.startswith("SigBlk"))
    return {"blocked": [s for s in range(1, 65) if mask >> (s - 1) & 1], "pid": os.getpid()}
