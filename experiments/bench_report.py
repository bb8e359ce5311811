"""The benchmark's report: the issue's targets judged on a run's figures, the machine it ran on, and the table."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform

import numpy as np
import torch

from experiments.common import Column, format_table


def targets(results: list) -> list:
    """The issue's targets, each judged on this run's figures: (target, met, detail)."""
    out = []

    def ratio(r, name):
        return r["implementations"].get(name, {}).get("ratio_to_manual")

    def add(target, checks):
        checks = [c for c in checks if c[1] is not None]
        met = bool(checks) and all(ok for _, _, ok in checks)
        detail = "; ".join(f"{label} {value}" for label, value, _ in checks) or "no data"
        out.append({"target": target, "met": met, "detail": detail})

    add("manual is never slower than autograd", [
        (f"{r['case']}/{r['device']}: autograd/manual", _fmt(ratio(r, "autograd+SGD")),
         (ratio(r, "autograd+SGD") or 0) >= 1.0) for r in results if ratio(r, "autograd+SGD") is not None])
    small = [r for r in results if r["case"] in ("online_tiny", "online_small", "minibatch_small")]
    add("manual is at least 3x faster than autograd on the tiny and small cases", [
        (f"{r['case']}/{r['device']}", _fmt(ratio(r, "autograd+SGD")), (ratio(r, "autograd+SGD") or 0) >= 3.0)
        for r in small if ratio(r, "autograd+SGD") is not None])
    add("large case: manual within 1.15x of its matrix-product floor", [
        (f"{r['case']}/{r['device']}: manual/floor", _fmt(1 / ratio(r, "matmul-floor")),
         1 / ratio(r, "matmul-floor") <= 1.15)
        for r in results if r["case"] == "large" and ratio(r, "matmul-floor")])
    add("manual beats numpy in every case", [
        (f"{r['case']}/{r['device']}: numpy/manual", _fmt(ratio(r, "numpy")), (ratio(r, "numpy") or 0) > 1.0)
        for r in results if ratio(r, "numpy") is not None])
    add("online XOR update under 5 us on the CPU", [
        (f"{name}", f"{r['implementations'][name]['median_us']:.2f} us",
         r["implementations"][name]["median_us"] < 5.0)
        for r in results if r["case"] == "online_tiny" and r["device"] == "cpu"
        for name in ("manual", "manual-c(1024/call)") if name in r["implementations"]])
    add("bytes kept for backward: manual <= autograd in every case", [
        (f"{r['case']}/{r['device']}", f"{r['implementations']['manual']['kept_bytes']} <= "
                                       f"{r['implementations']['autograd+SGD']['kept_bytes']}",
         r["implementations"]["manual"]["kept_bytes"] <= r["implementations"]["autograd+SGD"]["kept_bytes"])
        for r in results if "manual" in r["implementations"] and "autograd+SGD" in r["implementations"]])
    return out


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}x"


# ---------------------------------------------------------------------------------------------------- report
def machine_info(cfg) -> dict:
    """The machine, its thread pools and library versions, and the dtype of cfg (a bench Config)."""
    cpu = platform.processor()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    info = {
        "platform": platform.platform(), "python": platform.python_version(), "cpu": cpu,
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "env_threads": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")},
        "dtype": cfg.dtype, "cuda": None, "jax": None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if torch.cuda.is_available():
        info["cuda"] = {"device": torch.cuda.get_device_name(0), "version": torch.version.cuda,
                        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32}
    with contextlib.suppress(ImportError):
        import jax

        info["jax"] = jax.__version__
    with contextlib.suppress(ImportError):
        from threadpoolctl import threadpool_info

        info["thread_pools"] = [{"api": p.get("internal_api"), "threads": p.get("num_threads")}
                                for p in threadpool_info()]
    return info


def _human_bytes(n) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


COLUMNS = [Column("case", align="<"), Column("device", align="<"), Column("implementation", align="<"),
           Column("us / update (median)", spec=".2f"), Column("x manual (pairwise)", spec=".2f"),
           Column("kept for backward")]
TARGET_COLUMNS = [Column("target", align="<"), Column("met", align="<"), Column("figures", align="<")]


def table(report: dict) -> str:
    """The results as a markdown table: per case and device, time per update and ratios pair by pair."""
    rows = []
    for r in report["results"]:
        label = f"{r['case']} {'-'.join(map(str, r['sizes']))} b={r['batch']}"
        for name, row in sorted(r["implementations"].items(), key=lambda kv: kv[1]["median_us"]):
            shown = f"manual ({r['manual_path']})" if name == "manual" else name
            rows.append([label, r["device"], shown, row["median_us"], row.get("ratio_to_manual"),
                         _human_bytes(row["kept_bytes"])])
            label = ""
    targets_rows = [[t["target"], "yes" if t["met"] else "no", t["detail"]] for t in report["targets"]]
    return (format_table(COLUMNS, rows, markdown=True) + "\n\n"
            + format_table(TARGET_COLUMNS, targets_rows, markdown=True))
