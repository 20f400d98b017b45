"""``scripts/install.sh``'s choices, run against a stand-in Python that answers the
script's questions and records the pip commands it is given: where it installs (the
Python as it is, or a virtual environment of its own for a system Python that refuses
pip), which PyTorch build it takes, and the one sentence of each refusal. The real
installs (a venv on this machine's local wheels, Debian's own python3) are run by hand."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

#: the stand-in: ``FAKE_INFO`` answers the version / PEP 668 question, ``FAKE_TORCH``
#: whether torch imports, ``FAKE_LOCAL`` and ``FAKE_CPU_INDEX`` whether pip finds a local
#: torch wheel and reaches PyTorch's CPU index; every pip command goes to ``FAKE_LOG``
FAKE_PYTHON = r"""#!/usr/bin/env bash
case "$1" in
  -c)
    case "$2" in
      *EXTERNALLY-MANAGED*) echo "$FAKE_INFO"; exit 0 ;;
      "import torch") [ "$FAKE_TORCH" = 1 ]; exit ;;
      *) exit 0 ;;
    esac ;;
  -m)
    if [ "$2" = venv ]; then
      dir="${@: -1}"
      case " $* " in *" --clear "*) rm -rf "$dir" ;; esac
      echo "$0 -m venv $dir" >> "$FAKE_LOG"
      mkdir -p "$dir/bin" && cp "$0" "$dir/bin/python" && touch "$dir/bin/braintumor"
      exit 0
    fi
    echo "$0 $*" >> "$FAKE_LOG"
    if [ "$3" = download ]; then
      [ "$FAKE_LOCAL" = 1 ] || exit 1
      while [ $# -gt 0 ]; do [ "$1" = -d ] && touch "$2/torch-2.13.0+cpu-x.whl"; shift; done
      exit 0
    fi
    case "$*" in *download.pytorch.org*) [ "$FAKE_CPU_INDEX" = 1 ]; exit ;; esac
    exit 0 ;;
esac
exit 1
"""


def _install(tmp_path: Path, *args: str, info: str = "3.11 1 0", torch: bool = True,
             local: bool = False, cpu_index: bool = False, on_path: bool = False,
             cwd: Path | None = None, **more: str
             ) -> tuple[subprocess.CompletedProcess[str], list[str], Path]:
    fake = tmp_path / "sys" / "python3"
    if not fake.exists():
        fake.parent.mkdir(parents=True)
        fake.write_text(FAKE_PYTHON)
        fake.chmod(0o755)
    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    bin_dir = tmp_path / "bin"
    env = {
        "PATH": (f"{bin_dir}:" if on_path else "") + os.environ["PATH"],
        "HOME": str(tmp_path / "home"), "PYTHON": str(fake), "BRAINTUMOR_BIN": str(bin_dir),
        "FAKE_LOG": str(log), "FAKE_INFO": info, "FAKE_TORCH": str(int(torch)),
        "FAKE_LOCAL": str(int(local)), "FAKE_CPU_INDEX": str(int(cpu_index)), **more,
    }
    done = subprocess.run(["bash", str(SCRIPT), *args], env=env, capture_output=True,
                          text=True, timeout=60, cwd=cwd)
    calls = log.read_text().splitlines() if log.exists() else []
    return done, calls, fake


def _one_error(done: subprocess.CompletedProcess[str], *says: str) -> None:
    assert done.returncode == 1, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert lines[0].endswith("."), lines[0]
    for s in says:
        assert s in lines[0], lines[0]


def test_a_python_pip_may_install_into_is_used_as_it_is(tmp_path: Path) -> None:
    done, calls, fake = _install(tmp_path)
    assert done.returncode == 0, done.stderr
    assert calls == [f"{fake} -m pip install -q -e .[web]"]  # torch there already: kept
    assert not (tmp_path / "bin").exists() and not (tmp_path / "home").exists()
    done, calls, fake = _install(tmp_path, "--dev")  # a venv ("managed" is 0) likewise
    assert calls[-1] == f"{fake} -m pip install -q -e .[dev]"


def test_a_system_python_gets_a_virtual_environment_and_a_linked_command(
        tmp_path: Path) -> None:
    venv = tmp_path / "home" / ".local" / "share" / "braintumor" / "venv"
    done, calls, fake = _install(tmp_path, info="3.11 1 1", torch=False, local=True)
    assert done.returncode == 0, done.stderr
    py = f"{venv}/bin/python"
    assert calls[0] == f"{fake} -m venv {venv}"
    assert all(c.startswith(py + " -m pip ") for c in calls[1:]), calls  # never the system's
    assert calls[-1] == f"{py} -m pip install -q .[web]"
    link = tmp_path / "bin" / "braintumor"
    assert os.readlink(link) == f"{venv}/bin/braintumor"
    out = done.stdout.strip().splitlines()
    assert len(out) == 1 and str(venv) in out[0]
    # its folder not on PATH: the exact command to run instead
    assert f"run '{link}' demo instead of braintumor demo" in out[0], out[0]
    # on PATH (root's /usr/local/bin): just where; the venv is kept and used again
    done, calls, _ = _install(tmp_path, info="3.11 1 1", on_path=True)
    assert done.returncode == 0 and "instead" not in done.stdout
    assert f"linked as {link}." in done.stdout
    assert not any(" -m venv " in c for c in calls)


def test_dev_on_a_system_python_asks_for_a_virtual_environment(tmp_path: Path) -> None:
    done, calls, _ = _install(tmp_path, "--dev", info="3.11 1 1")
    _one_error(done, "make and activate a virtual environment first",
               "python3 -m venv ~/.venvs/braintumor && . ~/.venvs/braintumor/bin/activate",
               "bash scripts/install.sh --dev again")
    assert calls == []


def test_an_old_python_is_one_sentence(tmp_path: Path) -> None:
    done, calls, _ = _install(tmp_path, info="3.8 0 1")
    _one_error(done, "needs Python 3.10 or newer", "is 3.8")
    assert calls == []


@pytest.mark.parametrize("local, cpu_index", [(True, False), (False, True), (False, False)])
def test_torch_is_a_cpu_build_where_one_can_be_found(tmp_path: Path, local: bool,
                                                     cpu_index: bool) -> None:
    done, calls, fake = _install(tmp_path, torch=False, local=local, cpu_index=cpu_index)
    assert done.returncode == 0, done.stderr
    torch_calls = [c for c in calls if "torch==" in c or c.endswith(".whl")]
    assert torch_calls[0] == f"{fake} -m pip download -q --no-index --no-deps torch==2.13.0 -d " \
        + torch_calls[0].split(" -d ")[1]  # pip's own find-links asked first, offline
    if local:
        assert torch_calls[1].startswith(f"{fake} -m pip install -q /") \
            and torch_calls[1].endswith("/torch-2.13.0+cpu-x.whl")
        assert len(torch_calls) == 2
    else:
        assert "--index-url https://download.pytorch.org/whl/cpu" in torch_calls[1]
    if not local and not cpu_index:  # PyPI's, said to be possibly large
        assert torch_calls[2] == f"{fake} -m pip install -q torch==2.13.0"
        assert "may be a large CUDA build" in done.stderr
    else:
        assert "CUDA" not in done.stderr
    assert calls[-1] == f"{fake} -m pip install -q -e .[web]"


def test_a_broken_environment_is_made_anew_and_relative_paths_are_where_they_were_named(
        tmp_path: Path) -> None:
    """A venv whose interpreter link dangles (the system Python upgraded since) is made
    anew, not used and failed on at every run; a relative BRAINTUMOR_VENV and
    BRAINTUMOR_BIN name folders beside where the script was run, not inside the clone."""
    venv = tmp_path / "home" / ".local" / "share" / "braintumor" / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(tmp_path / "gone" / "python3.99")
    done, calls, _ = _install(tmp_path, info="3.11 1 1")
    assert done.returncode == 0, done.stderr
    assert calls[0].endswith(f" -m venv {venv}"), calls
    assert (venv / "bin" / "python").resolve().is_file()
    here = tmp_path / "work"
    here.mkdir()
    done, calls, _ = _install(tmp_path, info="3.11 1 1", cwd=here,
                              BRAINTUMOR_VENV="rel_venv", BRAINTUMOR_BIN="rel_bin")
    assert done.returncode == 0, done.stderr
    link = here / "rel_bin" / "braintumor"
    assert os.readlink(link) == f"{here / 'rel_venv'}/bin/braintumor"
    assert link.resolve().is_file() and not (ROOT / "rel_venv").exists()


def test_a_python_that_does_not_answer_is_one_sentence(tmp_path: Path) -> None:
    done, _, _ = _install(tmp_path, PYTHON="/bin/false")
    _one_error(done, "/bin/false", "PYTHON=")
