"""The machine a GPU check ran on, as JSON: GPU, driver, torch, CUDA, cuDNN, NCCL, triton, the C compiler, packages.

    python -m benchmarks.gpu_env OUT.json       # the GPU check's first step (benchmarks.gpu_check)

Every probe is guarded: a missing tool or package is recorded as null with the reason, never an error, since the
point is to learn what a machine lent for minutes has. Without a C compiler the C loop falls back to the fused
path (and triton, which builds its launcher with one, cannot compile for the GPU): the record says so.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import shutil
import subprocess
import sys

from manual_backprop.checkpoint import atomic_write

PACKAGES = ("numpy", "triton", "tensorboard", "sklearn", "matplotlib", "hypothesis", "pytest", "xdist",
            "pytest_timeout", "mnist1d", "jax", "threadpoolctl")


def _run(argv) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return None
    return (out.stdout or out.stderr).strip() if out.returncode == 0 else None


def _version(name: str):
    try:
        module = importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - a broken install is recorded, not raised
        return {"installed": False, "reason": f"{type(err).__name__}: {err}"[:200]}
    return {"installed": True, "version": getattr(module, "__version__", None)}


def compiler() -> dict:
    """The C compiler the C loop (and triton's launcher) would use, or why there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            first = (_run([name, "--version"]) or "").splitlines()
            return {"path": shutil.which(name), "version": first[0] if first else None}
    return {"path": None, "version": None,
            "note": "no C compiler: the C loop falls back to the fused path (its tests skip), and triton cannot "
                    "build its launcher, so torch.compile on CUDA (population-compiled) fails"}


def c_loop() -> dict:
    from manual_backprop import fast

    try:
        fast.load_kernel()
        return {"available": True}
    except fast.FastPathUnavailable as err:
        return {"available": False, "reason": " ".join(str(err).split())[:300]}


def cuda_info() -> dict:
    import torch

    info = {"available": torch.cuda.is_available(), "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None
    except Exception as err:  # noqa: BLE001
        info["nccl"] = f"unavailable ({type(err).__name__}: {err})"[:200]
    if torch.cuda.is_available():
        info["gpus"] = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            info["gpus"].append({"name": p.name, "capability": f"{p.major}.{p.minor}",
                                 "memory_gib": round(p.total_memory / 2**30, 1),
                                 "multiprocessors": p.multi_processor_count})
    smi = _run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,mig.mode.current",
                "--format=csv,noheader"])
    info["nvidia_smi"] = smi.splitlines() if smi else None
    return info


def environment() -> dict:
    import torch

    return {"python": platform.python_version(), "executable": sys.executable, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "load": os.getloadavg() if hasattr(os, "getloadavg") else None,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "pythonpath": os.environ.get("PYTHONPATH"), "cuda": cuda_info(), "compiler": compiler(),
            "c_loop": c_loop(), "packages": {name: _version(name) for name in PACKAGES}}


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m benchmarks.gpu_env OUT.json", file=sys.stderr)
        return 2
    env = environment()
    atomic_write(argv[0], lambda f: f.write(json.dumps(env, indent=2) + "\n"), binary=False)
    print(json.dumps(env, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
