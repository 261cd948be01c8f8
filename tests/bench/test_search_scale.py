"""Smoke test of bench/search_scale.py at a tiny size on SQLite: load, measure and read over HTTP all work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "search_scale.py"


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_load_measure_and_read_a_small_archive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'scale.db'}"
    assert "loaded" in run("load", "--url", url, "--patients", "40")

    measured = run("measure", "--url", url, "--runs", "2", "--only", "identifier")
    assert "40 Patients" in measured.replace(",", "")
    assert "identifier" in measured

    read = run("read", "--url", url, "--reads", "30", "--clients", "1,2", "--workers", "1")
    rows = [line.split() for line in read.splitlines() if line.split() and line.split()[0] in {"1", "2"}]
    assert [(row[0], row[1], row[-1]) for row in rows] == [("1", "30", "0"), ("2", "30", "0")], read
