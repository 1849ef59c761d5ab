"""Provenance (issue 26): every summary.json and report says which chipsim, commit, date, libraries, CPU,
threads and kernel paths made it."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from chipsim import provenance

REPO = Path(__file__).resolve().parents[1]
SMALL = str(REPO / "hwconfigs" / "44core_4bit.yaml")


def test_collect_names_version_commit_date_libraries_cpu_threads_and_kernels():
    import numpy
    import chipsim
    p = provenance.collect("test")
    assert p["chipsim"] == chipsim.__version__ and p["command"] == "test"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:                      # a git checkout: its commit, 40 hex digits
        assert p["commit"] == head.stdout.strip() and len(p["commit"]) == 40 and isinstance(p["dirty"], bool)
    assert p["versions"]["numpy"] == numpy.__version__ and p["python"].count(".") == 2
    assert p["date"].endswith("+00:00") and p["date"][:2] == "20"
    assert p["cpu"] and p["threads"]["cpu_count"] >= 1 and p["threads"]["numba"] >= 1
    assert any(b["api"] == "blas" for b in p["threads"]["blas"])
    from chipsim.kernels import exact
    # the unit this process's GEMMs use: the float path or an int8 unit named by the CPU feature it relies on
    assert p["kernels"]["gemm"] == exact.kernel_path()
    assert p["kernels"]["gemm"] == "float32-blas" or p["kernels"]["gemm"].startswith(
        ("int8-amx ", "int8-vnni ", "int8-dotprod ", "int8-generic ", "int8-cuda "))
    json.dumps(p)                                 # plain data, as summary.json needs
    text = "\n".join(provenance.markdown(p))
    assert "## Provenance" in text and p["chipsim"] in text and p["cpu"] in text


def test_outside_a_git_checkout_the_commit_is_null(tmp_path):
    assert provenance.git_commit(str(tmp_path)) == {"commit": None, "dirty": None}


def test_an_int8_kernel_path_is_read_from_its_hook(monkeypatch):
    from chipsim.kernels import exact
    monkeypatch.setattr(exact, "kernel_path", lambda: "int8 VNNI")
    assert provenance.kernel_paths()["gemm"] == "int8 VNNI"

    def broken():
        raise RuntimeError("no cpu flags")
    monkeypatch.setattr(exact, "kernel_path", broken)
    assert provenance.kernel_paths()["gemm"] == "unknown (RuntimeError)"      # never fails a run


def test_map_writes_provenance_into_summary_and_report(tmp_path):
    from chipsim.runner import map as chip_map
    out = tmp_path / "m"
    chip_map(SMALL, ("workload.model=" + str(REPO / "models" / "cnn_small.yaml"), "training.batch_size=8"),
             out_dir=str(out),
             progress=False)
    s = json.loads((out / "summary.json").read_text())
    assert s["provenance"]["command"] == "map" and s["provenance"]["chipsim"]
    assert s["provenance"]["kernels"]["last_paths"]           # the one engine step used the GEMM dispatch
    assert "## Provenance" in (out / "report.md").read_text()


def test_the_dirty_check_takes_no_lock_on_the_users_repository(monkeypatch):
    """A plain `git status` refreshes the index under .git/index.lock; a chipsim process killed meanwhile
    (a SIGKILLed worker, or the call's own timeout under load) would leave the repository locked."""
    calls = []
    real = subprocess.run

    def spy(argv, *a, **kw):
        calls.append(list(argv))
        return real(argv, *a, **kw)
    monkeypatch.setattr(subprocess, "run", spy)
    provenance.git_commit(str(REPO))
    status = [c for c in calls if "status" in c]
    assert not status or all("--no-optional-locks" in c for c in status)
    assert all(c[:2] != ["git", "status"] for c in calls)


def test_results_written_into_the_checkout_do_not_make_it_dirty(tmp_path):
    """A reproduction written into reports/ (tracked files) is not a change to what produced it; a change to
    the code is."""
    repo = tmp_path / "repo"
    (repo / "chipsim").mkdir(parents=True)
    (repo / "reports").mkdir()
    (repo / "chipsim" / "x.py").write_text("a = 1\n")
    (repo / "reports" / "r.md").write_text("old\n")
    git = ["git", "-C", str(repo), "-c", "user.email=t@t", "-c", "user.name=t"]
    for argv in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "init"]):
        subprocess.run(git + argv, check=True, capture_output=True)
    (repo / "reports" / "r.md").write_text("new\n")
    assert provenance.git_commit(str(repo))["dirty"] is False
    (repo / "chipsim" / "x.py").write_text("a = 2\n")
    assert provenance.git_commit(str(repo))["dirty"] is True
