"""--plots DIR on every experiment: PNG and SVG figures and one self-contained report.html, drawn from the run folder
(so ``python -m experiments.plotting`` redraws any earlier run), and a missing matplotlib refused before training."""

import re
import sys

import pytest

from experiments import hidden_layers, learning_modes, linear_collapse, softmax_outputs, sweep, xor
from experiments.plotting.__main__ import main as plotting_main

# experiment -> (module, tiny flags, the figures it must write, key figure first)
RUNS = {
    "learning_modes": (learning_modes, ["--dataset", "moons", "--n-samples", "60", "--sizes", "2", "6", "2",
                                        "--batch-size", "8", "--epochs", "3"], ["loss_per_mode", "decision_boundaries"]),
    "sweep": (sweep, ["--lrs", "1", "4", "--seeds", "2", "--epochs", "30", "--modes", "batch", "online"],
              ["success_heatmap", "success_curves"]),
    "xor": (xor, ["--seeds", "2", "--problems", "and", "xor", "--epochs-perceptron", "5", "--epochs-delta", "5",
                  "--epochs-mlp", "30"], ["curves_per_method", "final_boundaries"]),
    "softmax_outputs": (softmax_outputs, ["--epochs", "2"], ["row_sums", "decision_boundaries"]),
    "linear_collapse": (linear_collapse, ["--seeds", "1", "--epochs", "20", "--demo-inputs", "10"],
                        ["loss_linear_vs_nonlinear", "decision_boundaries"]),
    "hidden_layers": (hidden_layers, ["--epochs", "30", "--image-every", "10"], ["hidden_space", "margin"]),
}


@pytest.fixture(scope="module")
def plotted(tmp_path_factory):
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("plots")
    for name, (module, flags, _) in RUNS.items():
        argv = [*flags, "--logdir", str(root / "runs"), "--run", "t", "--device", "cpu", "--quiet",
                "--plots", str(root / name)]
        assert module.main(argv) == 0, name
    return root


@pytest.mark.parametrize("name", list(RUNS))
def test_every_experiment_writes_png_svg_and_a_self_contained_report(plotted, name):
    folder = plotted / name
    figures = RUNS[name][2]
    for figure in figures:
        assert (folder / f"{figure}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", figure
        svg = (folder / f"{figure}.svg").read_text()
        assert "<svg" in svg and "</svg>" in svg, figure
    page = (folder / "report.html").read_text(encoding="utf-8")
    sources = re.findall(r'src="([^"]*)"', page)
    assert len(sources) == len(figures) and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r'(?:href|src)="(?:https?:)?//', page), "the report must need nothing from the network"
    ids = re.findall(r'<figure id="([^"]+)"', page)
    assert ids == figures, "the key figure comes first"
    assert "<h2>Results</h2>" in page and "<h2>Settings</h2>" in page


def test_the_report_carries_the_printed_table(plotted):
    page = (plotted / "sweep" / "report.html").read_text(encoding="utf-8")
    assert "success: train loss &lt;= 0.04 within 30 epochs, over 2 seeds" in page
    page = (plotted / "hidden_layers" / "report.html").read_text(encoding="utf-8")
    assert "identity-2-2-1" in page and "never" in page


def test_plots_are_redrawn_from_a_run_folder(plotted, tmp_path, capsys):
    assert plotting_main([str(plotted / "runs" / "softmax_outputs" / "t"), str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "row_sums.svg").exists() and (tmp_path / "again" / "report.html").exists()
    assert plotting_main([str(tmp_path / "nothing" / "here"), str(tmp_path / "x"), "--experiment", "xor"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_plots_without_matplotlib_are_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    argv = ["--epochs", "5", "--logdir", str(tmp_path), "--quiet", "--plots", str(tmp_path / "plots")]
    assert hidden_layers.main(argv) == 2
    assert "--plots needs matplotlib: pip install 'manual-backprop[datasets]'" in capsys.readouterr().err
    assert not (tmp_path / "hidden_layers").exists() and not (tmp_path / "plots").exists()
