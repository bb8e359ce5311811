"""What the GPU check's steps measured, read from their own JSON files, the GPU targets judged on it, and its table.

Targets (issue 11): the population at least 4000x faster than the same runs one at a time; the CUDA-graph online
XOR update at 3 us or less. Each is "met", "not met", or "n/a" with the reason it was not measured.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from experiments.common import Column, format_table

POPULATION_SPEEDUP_TARGET = 4000.0
GRAPH_UPDATE_TARGET_US = 3.0


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _not_measured(dry_run: bool, why: str) -> str:
    return "not measured" + (" (CPU dry run)" if dry_run else f" ({why})")


def figures(dry_run: bool, folder: Path, steps: list) -> tuple:
    """(figures, targets): what the bench and population steps wrote into ``folder``, and the targets on it."""
    figs, targets = {}, []
    bench = _read_json(folder / "gpu_bench.json") if "bench" in steps else None
    graph_us = None
    for r in (bench or {}).get("results", []):
        rows = {n: {k: row.get(k) for k in ("median_us", "ratio_to_manual", "peak_cuda_bytes",
                                             "cuda_graph_pool_bytes", "note")}
                for n, row in r["implementations"].items()}
        figs[f"bench/{r['case']}"] = {"device": r["device"], "manual_path": r["manual_path"], "rows": rows,
                                      "skipped": r["skipped"]}
        if r["case"] == "online_tiny" and r["device"].startswith("cuda"):
            name = "manual" if r["manual_path"] == "cuda_graph" else "manual-cuda_graph"
            if name in r["implementations"]:
                graph_us = r["implementations"][name]["median_us"]
    target = f"CUDA-graph online XOR update at {GRAPH_UPDATE_TARGET_US:g} us or less"
    if graph_us is None:
        why = "the bench step wrote no CUDA online_tiny row" if "bench" in steps else "the bench step did not run"
        targets.append({"target": target, "status": "n/a", "detail": _not_measured(dry_run, why)})
    else:
        targets.append({"target": target, "status": "met" if graph_us <= GRAPH_UPDATE_TARGET_US else "not met",
                        "detail": f"{graph_us:.2f} us per update (graphs of 64 updates, replayed)"})
    pop = _read_json(folder / "gpu_population.json") if "population" in steps else None
    best = None
    if pop is not None:
        figs["population"] = {"device": pop.get("device"), "cases": pop.get("cases"),
                              "sequential": pop.get("sequential_by_dtype"), "check": pop.get("check")}
        for c in pop.get("cases", []):
            if best is None or c["speedup_vs_sequential_trainer"] > best["speedup_vs_sequential_trainer"]:
                best = c
    target = f"population at least {POPULATION_SPEEDUP_TARGET:g}x faster than sequential single runs"
    if best is None or dry_run:
        why = "the population step wrote no case" if "population" in steps else "the population step did not run"
        targets.append({"target": target, "status": "n/a", "detail": _not_measured(dry_run, why)})
    else:
        s = best["speedup_vs_sequential_trainer"]
        targets.append({"target": target, "status": "met" if s >= POPULATION_SPEEDUP_TARGET else "not met",
                        "detail": f"{s:.0f}x ({best['engine']} {best['dtype']}, K={best['K']}: "
                                  f"{best['ns_per_member_update']:.1f} ns per member-update vs the sequential "
                                  f"Trainer)"})
    return figs, targets


STEP_COLUMNS = [Column("step", align="<"), Column("status", align="<"), Column("seconds", spec=".1f"),
                Column("result", align="<")]
TARGET_COLUMNS = [Column("GPU target", align="<"), Column("status", align="<"), Column("figures", align="<")]


def step_result(step: dict) -> str:
    if step.get("error"):
        return step["error"]
    if step.get("summary"):
        return step["summary"]
    if step["step"] == "tests":
        return ", ".join(f"{n} {k}" for k, n in step.get("counts", {}).items())
    if step["step"].startswith("check"):
        paths = step.get("paths", {})
        bad = [f"{p} {r}" for p, r in paths.items() if r != "agrees"]
        return (f"{len(paths) - len(bad)}/{len(paths)} paths agree" + (": " + "; ".join(bad) if bad else "")
                if paths else "")
    return ""


def summary_table(report: dict) -> str:
    rows = [[s["step"], s["status"], s["seconds"], step_result(s)] for s in report["steps"]]
    return (format_table(STEP_COLUMNS, rows) + "\n\n"
            + format_table(TARGET_COLUMNS, [[t["target"], t["status"], t["detail"]] for t in report["targets"]]))
