"""The benchmark's report: the issue's targets judged on a run's figures, the machine it ran on, and the table."""

from __future__ import annotations

import contextlib
import datetime
import os
import platform
from typing import Optional

import numpy as np
import torch

from benchmarks.flops import KERNEL_BOUND
from experiments.common import Column, format_table


def targets(results: list, epoch_results: Optional[list] = None, quick: bool = False,
            extra: Optional[list] = None) -> list:
    """The issue's targets, each judged on this run's figures: {target, status, met, detail}.

    status is "met", "not met", or "n/a" where this run did not measure it (no figures, or only figures of cases
    that --quick shrank); ``met`` is True, False or None (n/a). A --quick run judges nothing (its few, short
    repeats are a smoke test, not a measurement): every timed target is "n/a", its figures stay in the detail.
    """
    out = _judged(results, epoch_results or []) + [dict(t) for t in extra or []]
    if quick:
        for t in out:
            if t["target"].startswith("bytes kept"):
                continue  # counted, not timed: as true in a quick run as in a long one
            if t["status"] != "n/a":
                t["detail"] = f"not judged (--quick): {t['status']} on {t['detail']}"
            t["status"], t["met"] = "n/a", None
    return out


def _judged(results: list, epoch_results: list) -> list:
    out = []
    shrunk = sorted({r["case"] for r in results if r.get("shrunk")})
    results = [r for r in results if not r.get("shrunk")]  # a shrunk case is not the case the target names

    def ratio(r, name):
        return r["implementations"].get(name, {}).get("ratio_to_manual")

    def add(target, checks, cases=None):
        checks = [c for c in checks if c[1] is not None]
        cut = [c for c in shrunk if cases is None or c in cases]  # cases of this target that --quick shrank
        if not checks:
            status = "n/a"
            detail = "not measured" + (f" (--quick shrank {', '.join(cut)})" if cut else "")
        else:
            status = "met" if all(ok for _, _, ok in checks) else "not met"
            detail = "; ".join(f"{label} {value}" for label, value, _ in checks)
            detail += f" ({', '.join(cut)} not judged: shrunk by --quick)" if cut else ""
        out.append({"target": target, "status": status, "met": None if status == "n/a" else status == "met",
                    "detail": detail})

    add("manual is never slower than autograd", [
        (f"{r['case']}/{r['device']}: autograd/manual", _fmt(ratio(r, "autograd+SGD")),
         (ratio(r, "autograd+SGD") or 0) >= 1.0) for r in results if ratio(r, "autograd+SGD") is not None])
    small = [r for r in results if r["case"] in ("online_tiny", "online_small", "minibatch_small")]
    add("manual is at least 3x faster than autograd on the tiny and small cases", [
        (f"{r['case']}/{r['device']}", _fmt(ratio(r, "autograd+SGD")), (ratio(r, "autograd+SGD") or 0) >= 3.0)
        for r in small if ratio(r, "autograd+SGD") is not None], cases=["online_tiny", "online_small",
                                                                         "minibatch_small"])
    add("large case: manual within 1.15x of its matrix-product floor", [
        (f"{r['case']}/{r['device']}: manual/floor", _fmt(1 / ratio(r, "matmul-floor")),
         1 / ratio(r, "matmul-floor") <= 1.15)
        for r in results if r["case"] == "large" and ratio(r, "matmul-floor")], cases=["large"])
    add("manual beats numpy in every case", [
        (f"{r['case']}/{r['device']}: numpy/manual", _fmt(ratio(r, "numpy")), (ratio(r, "numpy") or 0) > 1.0)
        for r in results if ratio(r, "numpy") is not None])
    def cpu(r, name):
        return r["implementations"].get(name, {}).get("cpu_us")

    api = [r for r in results if r["case"] in ("online_tiny", "minibatch_mnist") and r["device"] == "cpu"
           and None not in (cpu(r, "manual-api"), cpu(r, "numpy"), cpu(r, "autograd+SGD"))]
    add("one update through the API (loss_and_grads + step): no slower than numpy, >= 3x faster than autograd+SGD "
        "(CPU time)", [
            (f"{r['case']}: api {cpu(r, 'manual-api'):.1f} us, numpy {cpu(r, 'numpy'):.1f} us, autograd "
             f"{cpu(r, 'autograd+SGD'):.1f} us", "", cpu(r, "manual-api") <= cpu(r, "numpy")
             and cpu(r, "autograd+SGD") >= 3 * cpu(r, "manual-api")) for r in api],
        cases=["online_tiny", "minibatch_mnist"])
    add("online XOR update under 5 us on the CPU", [
        (f"{name}", f"{r['implementations'][name]['median_us']:.2f} us",
         r["implementations"][name]["median_us"] < 5.0)
        for r in results if r["case"] == "online_tiny" and r["device"] == "cpu"
        for name in ("manual", "manual-c(1024/call)") if name in r["implementations"]], cases=["online_tiny"])
    add("bytes kept for backward: manual <= autograd in every case", [
        (f"{r['case']}/{r['device']}", f"{r['implementations']['manual']['kept_bytes']} <= "
                                       f"{r['implementations']['autograd+SGD']['kept_bytes']}",
         r["implementations"]["manual"]["kept_bytes"] <= r["implementations"]["autograd+SGD"]["kept_bytes"])
        for r in results if "manual" in r["implementations"] and "autograd+SGD" in r["implementations"]])
    graph_rows = [(r, "manual" if r["manual_path"] == "cuda_graph" else "manual-cuda_graph") for r in results
                  if r["case"] == "online_tiny" and r["device"].startswith("cuda")]
    add("CUDA-graph online XOR update at 3 us or less", [
        (f"{r['device']}", f"{r['implementations'][name]['median_us']:.2f} us",
         r["implementations"][name]["median_us"] <= 3.0) for r, name in graph_rows if name in r["implementations"]],
        cases=["online_tiny"])
    return out + epoch_targets(epoch_results)


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
           Column("us / update (median)", spec=".2f"), Column("us CPU", spec=".2f"),
           Column("x manual (pairwise)", spec=".2f"), Column("kept for backward")]
CUDA_COLUMN = Column("CUDA peak (graph pool incl.)")
EPOCH_COLUMNS = [Column("case", align="<"), Column("implementation", align="<"),
                 Column("us / epoch wall (median)", spec=".1f"), Column("us / epoch CPU", spec=".1f"),
                 Column("us / update", spec=".3f"), Column("x default (pairwise)", spec=".2f"),
                 Column("call granularity", align="<"), Column("how", align="<")]
P_COLUMNS = [Column("case", align="<"), Column("implementation", align="<"),
             Column("ns / member-update wall (median)", spec=".1f"), Column("ns CPU", spec=".1f"),
             Column("call granularity", align="<"), Column("engine", align="<")]
TARGET_COLUMNS = [Column("target", align="<"), Column("status", align="<"), Column("figures", align="<")]


def table(report: dict) -> str:
    """The results as markdown tables: the update-level cases (time per update, ratios pair by pair), the
    Trainer-level cases (time per epoch, evaluation included), and the targets (met / not met / n/a)."""
    on_cuda = any(r["device"].startswith("cuda") for r in report["results"])
    rows = []
    for r in report["results"]:
        label = f"{r['case']} {'-'.join(map(str, r['sizes']))} b={r['batch']}"
        for name, row in sorted(r["implementations"].items(), key=lambda kv: kv[1]["median_us"]):
            shown = f"manual ({r['manual_path']})" if name == "manual" else name
            rows.append([label, r["device"], shown, row["median_us"], row.get("cpu_us"),
                         row.get("ratio_to_manual"),
                         _human_bytes(row["kept_bytes"])] + ([_human_bytes(row.get("peak_cuda_bytes"))]
                                                             if on_cuda else []))
            label = ""
    parts = []
    if rows:
        parts.append(format_table(COLUMNS + ([CUDA_COLUMN] if on_cuda else []), rows, markdown=True))
    rows = []
    for r in report.get("trainer_results", []):
        label = f"{r['case']}: {'-'.join(map(str, r['sizes']))} {r['mode']}, {r['updates_per_epoch']} updates/epoch"
        for name, row in sorted(r["implementations"].items(), key=lambda kv: kv[1]["median_us"]):
            rows.append([label, name, row["median_us"], row.get("cpu_us"), row["per_update_us"],
                         row.get("ratio_to_default"), row.get("granularity", ""), row["note"]])
            label = ""
        for name, why in r["skipped"].items():
            rows.append([label, name, None, None, None, None, "", f"not run: {why}"])
            label = ""
    if rows:
        parts.append(format_table(EPOCH_COLUMNS, rows, markdown=True))
    p = report.get("case_p")
    if p:
        label = f"P: {p['K']} x {'-'.join(map(str, p['sizes']))} {p['mode']} {p['dtype']}, {p['epochs']} epochs"
        parts.append(format_table(P_COLUMNS, [[label, name, row["ns_per_member_update"],
                                               row["cpu_ns_per_member_update"], row["granularity"], row["engine"]]
                                              for name, row in p["implementations"].items()], markdown=True))
    parts.append(format_table(TARGET_COLUMNS, [[t["target"], t["status"], t["detail"]] for t in report["targets"]],
                              markdown=True))
    return "\n\n".join(parts)


def epoch_targets(results: list) -> list:
    """Issue 19's Trainer-level targets: status "met", "not met" or "n/a" (not measured in this run)."""
    by = {r["case"]: r["implementations"] for r in results}
    jax_skipped = {r["case"]: r.get("skipped", {}).get("jax") for r in results}
    out = []

    def add(target, status, detail):
        out.append({"target": target, "status": status, "met": None if status == "n/a" else status == "met",
                    "detail": detail})

    def jax_best(rows):
        names = [n for n in ("jax", "jax (E epochs/call)") if n in rows]
        return min(names, key=lambda n: rows[n]["median_us"]) if names else None

    rows = by.get("S", {})
    default = rows.get("trainer-default", {}).get("median_us")
    target = "S: default Trainer at most 0.5x JAX's jitted epoch, same work"
    best = jax_best(rows)
    if default is None or best is None:
        add(target, "n/a", "not measured" if default is None else f"JAX {jax_skipped.get('S') or 'not measured'}")
    else:
        r = 1 / rows[best]["ratio_to_default"]  # default time / JAX time, pair by pair
        cpu_d, cpu_j = rows["trainer-default"].get("cpu_us"), rows[best].get("cpu_us")
        on_cpu = "" if not (cpu_d and cpu_j) else (
            f"; process CPU {cpu_d:.0f} vs {cpu_j:.0f} us ({cpu_d / cpu_j:.2f}x, "
            f"{'met' if cpu_d / cpu_j <= 0.5 else 'not met'} on CPU time)")
        add(target, "met" if r <= 0.5 else "not met",
            f"default {default:.0f} us, {best} {rows[best]['median_us']:.0f} us per epoch ({r:.2f}x) wall{on_cpu}")
    target = "S: default Trainer within 1.5x the FLOP floor"
    if default is None or "FLOP floor" not in rows:
        add(target, "n/a", "not measured")
    else:
        over = default / rows["FLOP floor"]["median_us"]
        cpu = rows["trainer-default"].get("cpu_us")
        floor = rows["FLOP floor"]["median_us"]
        on_cpu = "" if not cpu else (f"; process CPU {cpu:.0f} us = {cpu / floor:.1f}x "
                                     f"({'met' if cpu / floor <= 1.5 else 'not met'} on CPU time)")
        fma = rows.get("FMA floor", {}).get("median_us")
        on_cpu += "" if not fma else (f"; the FMA floor {fma:.0f} us ({rows['FMA floor']['note']}): default "
                                      f"{default / fma:.2f}x it ({'within' if default / fma <= 1.5 else 'not within'} "
                                      "1.5x)")
        bound = rows.get(KERNEL_BOUND, {}).get("median_us")
        on_cpu += "" if not bound else (f"; the narrow kernel's own bound {bound:.0f} us = {bound / floor:.2f}x the "
                                        "FLOP floor")
        add(target, "met" if over <= 1.5 else "not met",
            f"default {default:.0f} us = {over:.1f}x the floor {floor:.0f} us ({rows['FLOP floor']['note']})"
            f"{on_cpu}")
    rows = by.get("O", {})
    target = "O: default Trainer at most 1 us per update, evaluation included"
    if "trainer-default" not in rows:
        add(target, "n/a", "not measured")
    else:
        per, cpu = rows["trainer-default"]["per_update_us"], rows["trainer-default"]["cpu_us"] / 4
        add(target, "met" if per <= 1.0 else "not met",
            f"{per:.2f} us per update wall, {cpu:.2f} us process CPU ({'met' if cpu <= 1.0 else 'not met'} on CPU "
            f"time; {rows['trainer-default']['median_us']:.1f} us per epoch of 4 updates and one evaluation)")
    rows = by.get("D", {})
    target = "D: default Trainer at least 25x numpy"
    if "trainer-default" not in rows or "numpy" not in rows:
        add(target, "n/a", "not measured")
    else:
        r = rows["numpy"]["ratio_to_default"]
        add(target, "met" if r >= 25.0 else "not met", f"numpy/default {r:.1f}x")
    target = "D: default Trainer no slower than JAX"
    best = jax_best(rows)
    if "trainer-default" not in rows or best is None:
        add(target, "n/a", "not measured" if "trainer-default" not in rows
            else f"JAX {jax_skipped.get('D') or 'not measured'}")
    else:
        r = rows[best]["ratio_to_default"]
        add(target, "met" if r >= 1.0 else "not met", f"{best}/default {r:.2f}x")
    return out
