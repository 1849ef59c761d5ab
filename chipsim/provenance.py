"""Where a result came from: chipsim's version and commit, the date, the libraries, the CPU, the threads
and the kernel paths, for every summary.json and report.

Why: a number without its provenance cannot be checked. Two runs that
disagree by a fraction of a point may differ only in their BLAS (float32
parts sum in the order of the CPU's kernels) or in a numba version; an
accuracy from last month's commit may predate a fix. ``collect()`` gathers
it all without importing torch (seconds) and without failing: anything it
cannot find is ``None``, never an exception, because provenance must never
be the reason a finished training is lost.
"""
from __future__ import annotations

import datetime
import os
import platform
import subprocess
from importlib import metadata

PACKAGES = ("numpy", "numba", "torch", "threadpoolctl", "matplotlib")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


#: what determines a result: the code, the presets, the models and the search spaces. Results written into
#: the checkout (``chipsim reproduce --out reports``) are not among them, so writing them does not make the
#: record of what produced them say "with uncommitted changes"
RESULT_SOURCES = ("chipsim", "hwconfigs", "models", "spaces", "pyproject.toml")


def git_commit(path: str | None = None) -> dict:
    """{"commit", "dirty"} of the checkout chipsim runs from; both None outside a git checkout. ``dirty``:
    the files that determine a result (:data:`RESULT_SOURCES`) differ from the commit."""
    root = path or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "-C", root, "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=5)
        if commit.returncode != 0:
            return out
        out["commit"] = commit.stdout.strip() or None
        # --no-optional-locks: a plain `git status` refreshes the index under .git/index.lock, and a
        # chipsim process killed meanwhile (a SIGKILLed sweep worker) would leave the user's repository locked
        status = subprocess.run(["git", "--no-optional-locks", "-C", root, "status", "--porcelain",
                                 "--untracked-files=no", "--", *RESULT_SOURCES],
                                capture_output=True, text=True, timeout=5)
        out["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh.read(1 << 20).splitlines():
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "cpu model", "Processor") and value.strip():
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or None


def threads() -> dict:
    """Cores, numba's thread count and the BLAS/OpenMP pools (threadpoolctl), as this process runs them."""
    out = {"cpu_count": os.cpu_count(), "numba": None, "blas": []}
    try:
        import numba
        out["numba"] = int(numba.get_num_threads())
    except Exception:                            # noqa: BLE001 -- provenance never fails a run
        pass
    try:
        from threadpoolctl import threadpool_info
        out["blas"] = [{"api": p.get("user_api"), "library": p.get("internal_api"), "version": p.get("version"),
                        "threads": p.get("num_threads"), "architecture": p.get("architecture")}
                       for p in threadpool_info()]
    except Exception:                            # noqa: BLE001
        pass
    return out


def kernel_paths() -> dict:
    """Which kernels computed the numbers: the unit the exact GEMMs run on (``kernels.exact.kernel_path()``:
    the int8 unit or the float path), the paths its last calls took, and whether the numba data-movement
    kernels ran parallel."""
    from .kernels import exact
    try:
        gemm = exact.kernel_path()
    except Exception as exc:                     # noqa: BLE001  (a provenance record never fails a run)
        gemm = f"unknown ({type(exc).__name__})"
    return {"gemm": gemm, "last_paths": dict(sorted(getattr(exact, "LAST_PATH", {}).items())),
            "numba_parallel": bool(getattr(exact, "PARALLEL", False))}
    hook = getattr(exact, "kernel_path", None)
    if callable(hook):
        try:
            out["gemm"] = hook()
        except Exception as exc:                 # noqa: BLE001
            out["gemm"] = f"unknown ({type(exc).__name__})"
    else:
        out["gemm"] = ("float BLAS (np.matmul) where a bound proves it exact (fp32, chunked fp64), int64 "
                       "loops otherwise; float32 BLAS for the unquantized (32-bit) parts")
    out["last_paths"] = dict(sorted(getattr(exact, "LAST_PATH", {}).items()))
    out["numba_parallel"] = bool(getattr(exact, "PARALLEL", False))
    return out


def collect(command: str | None = None) -> dict:
    """Everything above, plus chipsim's version, the date (UTC) and the Python version."""
    from . import __version__
    return {"chipsim": __version__, **git_commit(), "command": command,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "implementation": platform.python_implementation(),
            "platform": platform.platform(), "versions": {p: _version(p) for p in PACKAGES},
            "cpu": cpu_model(), "threads": threads(), "kernels": kernel_paths()}


def markdown(p: dict) -> list:
    """The provenance section of a report, from ``collect()``'s dict."""
    commit = p.get("commit") or "not a git checkout"
    if p.get("commit") and p.get("dirty"):
        commit += " (with uncommitted changes)"
    blas = "; ".join(f"{b['library']} {b['version']} ({b['threads']} threads)" for b in p["threads"]["blas"]
                     if b.get("api") == "blas") or "none found"
    libs = ", ".join(f"{k} {v}" for k, v in p["versions"].items() if v)
    return ["## Provenance", "",
            f"- chipsim {p['chipsim']}, commit {commit}; generated {p['date']}",
            f"- Python {p['python']}; {libs}",
            f"- CPU {p['cpu'] or 'unknown'} ({p['threads']['cpu_count']} logical cores), {p['platform']}",
            f"- threads: numba {p['threads']['numba']}; BLAS {blas}",
            f"- kernels: {p['kernels']['gemm']}"
            + (f"; last paths {', '.join(f'{k} {v}' for k, v in p['kernels']['last_paths'].items())}"
               if p["kernels"]["last_paths"] else "")
            + f"; numba data movement {'parallel' if p['kernels']['numba_parallel'] else 'serial'}", ""]
