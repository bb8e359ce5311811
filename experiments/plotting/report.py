"""The files of ``--plots DIR``: each figure as PNG and SVG, and report.html, a page that needs nothing else."""

from __future__ import annotations

import base64
import datetime
import html
import importlib
import io
import json
from pathlib import Path
from typing import Optional

PNG_DPI = 150


def require_matplotlib(folder=None) -> None:
    """Raise ImportError with the install command when matplotlib is missing, ValueError when ``folder`` (--plots)
    is a file (the scripts call it before training)."""
    if folder is not None and Path(folder).exists() and not Path(folder).is_dir():
        raise ValueError(f"--plots {folder}: it exists and is not a folder; pass a folder for the figures")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError("--plots needs matplotlib: pip install 'manual-backprop[datasets]' (or pip install "
                          "matplotlib)") from None


def write_plots(experiment: str, run_dir, folder, *, text: str = "", config: Optional[dict] = None) -> list:
    """Draw the figures of ``experiment`` from ``run_dir`` into ``folder`` (PNG and SVG each) and write
    ``folder/report.html``; returns the paths written. ``text`` (the printed table) and ``config`` go into the page."""
    require_matplotlib()
    from .figures import FIGURES

    if experiment not in FIGURES:
        raise ValueError(f"experiment must be one of {sorted(FIGURES)}, but got {experiment!r} (pass --experiment "
                         f"when RUN_DIR's parent folder is not named after its experiment)")
    run_dir, folder = check_run_dir(run_dir), Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"OUT {folder} exists and is not a folder; pass a folder for the figures")
    _check_results(experiment, run_dir)
    if config is None and (run_dir / "config.json").exists():
        config = _read_json(run_dir / "config.json")
    folder.mkdir(parents=True, exist_ok=True)
    written, sections = [], []
    import matplotlib

    # a run folder's name is text, never mathtext: "$\frac{a$" is drawn as it is, not parsed (or refused)
    with matplotlib.rc_context({"text.parse_math": False}):
        try:
            for name, caption, figure in FIGURES[experiment](run_dir):
                png = _save(figure, folder / f"{name}.png", "png")
                _save(figure, folder / f"{name}.svg", "svg")
                written += [folder / f"{name}.png", folder / f"{name}.svg"]
                sections.append((name, caption, png))
        except (KeyError, IndexError, TypeError) as err:
            raise ValueError(f"{run_dir / 'results.json'} does not hold what {experiment} writes (missing or wrong "
                             f"{err}); is {run_dir} a run of another experiment, or of an older version?") from None
    page = folder / "report.html"
    page.write_text(report_html(experiment, run_dir, sections, text, config), encoding="utf-8")
    return written + [page]


def check_run_dir(run_dir) -> Path:
    """RUN_DIR as a Path, or ValueError saying that it is missing or a file."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"RUN_DIR {run_dir} does not exist; pass a run folder, <logdir>/<experiment>/<run>")
    if not run_dir.is_dir():
        raise ValueError(f"RUN_DIR {run_dir} is a file, not a run folder (<logdir>/<experiment>/<run>)")
    return run_dir


# What each experiment's results.json holds at its top level (learning_modes: one entry per mode).
RESULT_KEYS = {"sweep": "rows", "xor": "summary", "softmax_outputs": "runs", "linear_collapse": "summary",
               "hidden_layers": "runs", "gradient_noise": "results"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err})") from None


def _check_results(experiment: str, run_dir: Path) -> dict:
    """The run's results.json ({} when there is none), refused by name when it is not this experiment's."""
    path = run_dir / "results.json"
    if not path.exists():
        return {}
    results = _read_json(path)
    if not isinstance(results, dict):
        raise ValueError(f"{path} must hold a JSON object, but holds {type(results).__name__}")
    key = RESULT_KEYS.get(experiment)
    from manual_backprop.modes import MODES

    fits = (key in results) if key else (bool(results) and set(results) <= set(MODES))
    if not fits:
        what = f"no {key!r}" if key else f"keys {sorted(results)[:4]}, not modes"
        raise ValueError(f"{path} is not a results file of {experiment} ({what}); pass the --experiment that wrote "
                         f"{run_dir}")
    return results


def _save(figure, path: Path, fmt: str) -> bytes:
    """Write the figure; returns the bytes written. The SVG carries no date, so a rerun gives the same file."""
    import matplotlib

    buffer = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "manual_backprop", "svg.fonttype": "none"}):
        figure.savefig(buffer, format=fmt, dpi=PNG_DPI,
                       metadata={"Date": None} if fmt == "svg" else {"Software": "manual_backprop"})
    data = buffer.getvalue()
    path.write_bytes(data)
    return data


def report_html(experiment: str, run_dir: Path, sections: list, text: str, config: Optional[dict]) -> str:
    """One page, everything inline: the title and point of the experiment, the table, the figures, the settings."""
    module = importlib.import_module(f"experiments.{experiment}")
    doc = (module.__doc__ or experiment).strip()
    title, _, rest = doc.partition("\n\n")
    figures = "\n".join(
        f'<figure id="{html.escape(name)}"><img alt="{html.escape(caption)}" '
        f'src="data:image/png;base64,{base64.b64encode(png).decode()}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        for name, caption, png in sections)
    settings = json.dumps(config, indent=1, default=str) if config else ""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)} ({html.escape(run_dir.name)})</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }}
h1 {{ font-size: 1.4em; }} pre {{ background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }}
figure {{ margin: 2em 0; }} img {{ max-width: 100%; height: auto; }}
figcaption {{ color: #444; margin-top: 0.4em; }} .meta {{ color: #666; font-size: 0.9em; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p class="meta">python -m experiments.{html.escape(experiment)}: run folder {html.escape(str(run_dir))}, report written
{stamp}. Every figure is also in this folder as PNG and SVG.</p>
<details><summary>What the experiment shows</summary><pre>{html.escape(rest)}</pre></details>
{f"<h2>Results</h2><pre>{html.escape(text)}</pre>" if text else ""}
<h2>Figures</h2>
{figures}
{f"<h2>Settings</h2><pre>{html.escape(settings)}</pre>" if settings else ""}
</body></html>
"""


def finish_run(experiment: str, run_dir, plots, *, text: str, config: Optional[dict], dashboard, show: bool = True,
               printed: Optional[str] = None, seconds: Optional[float] = None) -> None:
    """How every experiment ends: with ``plots``, the figures and report.html; then, when ``show``, the printed
    table (``printed``, default ``text``), where the figures went, and how to open TensorBoard on the run."""
    if plots:
        write_plots(experiment, run_dir, plots, text=text, config=config)
    if not show:
        return
    print(text if printed is None else printed)
    if plots:
        print(f"\nfigures and report.html in {plots}")
    print("\n" + (f"{seconds:.1f} s. " if seconds is not None else "") + dashboard.instructions(run_dir))
