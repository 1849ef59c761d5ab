"""Atomic writes: a failed write keeps the old file and leaves no temp file behind."""
import os

import pytest

from chipsim.atomic import atomic_file
from chipsim.report import atomic_write


def test_success_replaces_and_failure_keeps_the_old_file(tmp_path):
    target = tmp_path / "sub" / "summary.json"
    atomic_write(str(target), "first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError):
        with atomic_file(str(target)) as tmp, open(tmp, "w") as fh:
            fh.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert os.listdir(target.parent) == ["summary.json"]
