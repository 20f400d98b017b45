"""Lint and type checks run inside the test suite, so CI enforces them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed")
def test_ruff_lint() -> None:
    r = _run(["ruff", "check", "src", "tests", "benchmarks"])
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.slow
def test_mypy_src() -> None:
    pytest.importorskip("mypy")
    r = _run([sys.executable, "-m", "mypy", "src/braintumor"])
    assert r.returncode == 0, r.stdout + r.stderr


def test_help_is_fast_and_lists_commands() -> None:
    r = _run([sys.executable, "-c",
              "import sys, braintumor.cli as c; c.main(['--help'])"])
    assert "usage: braintumor" in r.stdout
    # heavy libraries must stay unimported for --help
    r = _run([sys.executable, "-c",
              "import sys\nimport braintumor.cli as c\n"
              "try:\n    c.main(['--help'])\nexcept SystemExit:\n    pass\n"
              "print('torch' in sys.modules, 'fastapi' in sys.modules)"])
    assert r.stdout.strip().endswith("False False"), r.stdout


def test_every_benchmark_says_what_it_measures_on_help() -> None:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    for script in sorted((ROOT / "benchmarks").glob("bench_*.py")):
        r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                           text=True, timeout=120, env=env)
        assert r.returncode == 0 and r.stdout.startswith("usage:"), (script.name, r.stderr)
