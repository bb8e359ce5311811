"""experiments.gradient_noise, run tiny: its figures, its TensorBoard runs, its statistics and its errors."""

import json
import math

import pytest
import torch

from experiments import gradient_noise
from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population
from manual_backprop.quantities import gradient_noise as noise_of
from manual_backprop.tblog import read_scalars

TINY = ["--members", "6", "--epochs", "6", "--measure-every", "2", "--quiet"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    logdir = tmp_path_factory.mktemp("runs")
    assert gradient_noise.main([*TINY, "--logdir", str(logdir), "--run", "tiny"]) == 0
    return logdir / "gradient_noise" / "tiny"


def test_every_mode_writes_its_figures_and_tensorboard_run(finished_run):
    results = json.loads((finished_run / "results.json").read_text())["results"]
    assert list(results) == ["batch", "online", "minibatch"]
    for mode, r in results.items():
        assert r["members"] == 6 and 0 <= r["escaped"] <= 6
        assert r["ci_low"] <= r["rate"] <= r["ci_high"]
        assert r["series"]["epoch"] == [0, 2, 4, 6]
        scalars = read_scalars(finished_run / mode)
        for tag in ("noise/b_simple_median", "directions/mean_cosine", "directions/variance", "escaped/fraction"):
            assert [step for step, _ in scalars[tag]] == [0, 2, 4, 6], f"{mode} {tag}"
    assert results["batch"]["initial"]["mean_cosine"] == pytest.approx(1.0)
    assert results["batch"]["initial"]["variance"] == 0.0
    # The same starting networks in every mode: the noise scale at epoch 0 is the same number.
    assert results["online"]["initial"]["b_simple_median"] == results["batch"]["initial"]["b_simple_median"]


def test_direction_spread_is_the_sampling_variance_of_the_mode():
    """Online: E|g_i - G|^2 over the four points is tr(Sigma) (correction 0); a b-subset drawn without replacement
    from N has the variance of its mean tr(Sigma)/b (N-b)/(N-1), the finite-population correction."""
    data = load_dataset("xor", dtype=torch.float64)
    pop = Population([2, 2, 1], seeds=[0, 1, 2], dtype=torch.float64)
    x, y = data.x_train, data.y_train.to(torch.float64).unsqueeze(1)
    trace = noise_of(pop, x, y, "squared_error", correction=0).trace
    g = torch.Generator().manual_seed(0)
    for mode, b in (("online", 1), ("minibatch", 2), ("minibatch", 3)):
        weights = gradient_noise.direction_weights(mode, 4, b, 256, g)
        spread = gradient_noise.measure(pop, x, y, pop.check_loss("squared_error"), weights)["variance"]
        torch.testing.assert_close(spread, trace / b * (4 - b) / 3, rtol=1e-12, atol=0)


def test_wilson_interval():
    # Textbook values (Newcombe 1998, table I): 15/148 -> 0.0624-0.1605; 0/10 -> 0-0.2775.
    low, high = gradient_noise.wilson_interval(15, 148)
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)
    low, high = gradient_noise.wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    assert gradient_noise.wilson_interval(10, 10)[1] == 1.0
    assert math.isclose(sum(gradient_noise.wilson_interval(5, 10)), 1.0)


def test_bad_settings_end_in_one_line(tmp_path, capsys):
    assert gradient_noise.main(["--batch-size", "5", "--logdir", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "gradient_noise: error: --batch-size must be at most 4 (XOR's points), but got 5"
    assert gradient_noise.main(["--confidence", "1.5", "--logdir", str(tmp_path), "--quiet"]) == 2
    assert "--confidence must lie in (0, 1)" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- on par (issue 21.5)
def test_on_par_with_the_other_experiments(tmp_path, capsys):
    """A dashboard (layout, link with its tag filter), HPARAMS with metric columns and the full settings, --plots,
    --seed, and no progress-bar frames when stderr is a log file."""
    pytest.importorskip("matplotlib")
    from manual_backprop.tblog.dashboard import whole_text
    from tests.logging.test_dashboards import experiment_of, layout_of

    args = ["--members", "4", "--epochs", "4", "--logdir", str(tmp_path), "--run", "r", "--seed", "3", "--plots",
            str(tmp_path / "plots")]
    assert gradient_noise.main(args) == 0
    out, err = capsys.readouterr()
    assert err == "", "no progress-bar frames in a log"
    assert "tag filter: ^(escaped|directions|noise)/" in out and "pinnedCards" in out
    run_dir = tmp_path / "gradient_noise" / "r"
    assert layout_of(run_dir / "online").category[0].chart[0].title == "escaped fraction"
    columns, metrics, values = experiment_of(run_dir / "online")
    assert columns[0] == ("mode", True) and ("seed", False) in columns and ("epochs", False) in columns
    assert metrics[0] == "escaped/fraction" and values["seed"] == whole_text(3) and values["mode"] == "online"
    assert (tmp_path / "plots" / "escapes_and_noise.png").exists() and (tmp_path / "plots" / "report.html").exists()
    other = json.loads((run_dir / "results.json").read_text())["results"]["batch"]["initial"]
    assert gradient_noise.main([*args[:-2], "--run", "s", "--seed", "0", "--quiet"]) == 0
    seed0 = json.loads((tmp_path / "gradient_noise" / "s" / "results.json").read_text())["results"]["batch"]["initial"]
    assert other != seed0, "--seed draws other starting networks"
