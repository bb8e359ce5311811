"""install.sh as a new user meets it (issue 12, items 18-19): without a working GPU torch comes from PyTorch's CPU
wheel index, with one short attempt; an unreachable index falls back to pip's configured one; a GPU machine gets
the default build; a torch already there is kept. Run against a stand-in for python that records each call, so the
test needs no network and installs nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$CALLS"
case "$*" in
  "-c import torch") exit "${HAS_TORCH:-1}" ;;
  *download.pytorch.org*) exit "${CPU_INDEX_RC:-0}" ;;
esac
exit 0
"""


def run_install(tmp_path, *, gpu=None, cpu_index_rc=0, has_torch=1) -> tuple:
    """(the pip installs of torch that install.sh made, its stderr)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "fake-python"
    python.write_text(FAKE_PYTHON)
    python.chmod(0o755)
    if gpu is not None:  # an nvidia-smi that works (a GPU) or fails (a driver without a device)
        smi = bin_dir / "nvidia-smi"
        smi.write_text(f"#!/bin/sh\nexit {0 if gpu else 9}\n")
        smi.chmod(0o755)
    calls = tmp_path / "calls"
    calls.touch()
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "PYTHON": str(python), "CALLS": str(calls),
           "CPU_INDEX_RC": str(cpu_index_rc), "HAS_TORCH": str(has_torch), "HOME": str(tmp_path)}
    result = subprocess.run(["bash", str(ROOT / "install.sh"), "test"], env=env, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return [line for line in calls.read_text().splitlines() if "pip install" in line and "torch==" in line], \
        result.stderr


@pytest.mark.parametrize("gpu", [None, False], ids=["no-nvidia-smi", "nvidia-smi-fails"])
def test_without_a_gpu_torch_comes_from_the_cpu_index_with_one_short_attempt(tmp_path, gpu):
    installs, _ = run_install(tmp_path, gpu=gpu)
    assert len(installs) == 1, installs
    assert "--index-url https://download.pytorch.org/whl/cpu" in installs[0]
    assert "--timeout 5" in installs[0] and "--retries 0" in installs[0] and "torch==2.13.0" in installs[0]


def test_an_unreachable_cpu_index_falls_back_to_the_configured_index(tmp_path):
    installs, stderr = run_install(tmp_path, cpu_index_rc=1)
    assert len(installs) == 2 and "download.pytorch.org" in installs[0], installs
    assert "--index-url" not in installs[1] and installs[1].endswith("torch==2.13.0")
    assert "cannot be reached" in stderr


def test_a_gpu_machine_gets_the_default_build_and_an_installed_torch_is_kept(tmp_path):
    installs, _ = run_install(tmp_path / "gpu", gpu=True)
    assert len(installs) == 1 and "--index-url" not in installs[0], installs
    kept, _ = run_install(tmp_path / "kept", has_torch=0)
    assert kept == []


def test_requires_python_is_what_torch_2_13_needs():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^requires-python = ">=3\.10"', text, re.M), "torch 2.13.0 has wheels for Python >= 3.10 only"
    assert sys.version_info >= (3, 10)


def test_the_install_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(ROOT / "install.sh")]).returncode == 0
    assert os.access(ROOT / "install.sh", os.R_OK)


def test_every_c_source_ships_in_the_package():
    """The kernels compile on first use from _csrc/, so an installed (not editable) copy needs every file there:
    vecmath.h was left out by a package-data glob of *.c alone."""
    import fnmatch
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["manual_backprop"]
    sources = sorted(p.relative_to(root / "manual_backprop").as_posix()
                     for p in (root / "manual_backprop" / "_csrc").iterdir() if p.is_file())
    assert sources and [s for s in sources if not any(fnmatch.fnmatch(s, g) for g in globs)] == []
