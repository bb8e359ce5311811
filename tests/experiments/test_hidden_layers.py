"""The function of hidden layers: a non-linear hidden layer makes XOR's hidden states separable by the output layer's
own line; a linear one never does (a proof, checked at every epoch); the script logs it to TensorBoard."""

import json

import pytest
import torch

from experiments import hidden_layers
from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.tblog import load_run, read_scalars
from manual_backprop.training import train

F64 = torch.float64
XOR = load_dataset("xor", dtype=F64)


def worst_distance(net: MLP) -> float:
    w, b = hidden_layers.output_line(net)
    hidden = hidden_layers.hidden_states(net, XOR.x_train)
    return hidden_layers.signed_distances(hidden, w, b, XOR.y_train).min().item()


def test_signed_distances_are_positive_exactly_when_the_output_line_separates():
    net = MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid", dtype=F64, seed=0)
    w, b = hidden_layers.output_line(net)
    hidden = hidden_layers.hidden_states(net, XOR.x_train)
    distances = hidden_layers.signed_distances(hidden, w, b, XOR.y_train)
    output = net(XOR.x_train)[:, 0]
    right = (output >= 0.5) == (XOR.y_train == 1)
    assert torch.equal(distances > 0, right), "a positive distance is a point on its class's side of 0.5"
    torch.testing.assert_close(distances.abs() * w.norm(), (hidden @ w + b).abs())


@pytest.mark.parametrize("seed", range(4))
def test_a_linear_hidden_layer_never_makes_xor_separable(seed):
    """h = W1 x + b1 is affine, so (2y - 1)(w h + b) summed over XOR's four points is 0: the worst is <= 0."""
    net = MLP([2, 2, 1], activation="identity", output_activation="sigmoid", dtype=F64, seed=seed)
    worst = [worst_distance(net)]
    for _ in range(20):
        train(net, XOR, mode="batch", lr=5.0, epochs=10, loss_fn="squared_error", seed=seed)
        worst.append(worst_distance(net))
    assert max(worst) <= 1e-12, f"seed {seed}: a linear hidden layer separated XOR ({max(worst)})"


def test_a_sigmoid_hidden_layer_makes_xor_separable():
    net = MLP([2, 2, 1], activation="sigmoid", output_activation="sigmoid", dtype=F64, seed=0)
    assert worst_distance(net) < 0
    train(net, XOR, mode="batch", lr=5.0, epochs=300, loss_fn="squared_error", seed=0)
    assert worst_distance(net) > 0.05


def test_the_projection_keeps_the_output_layers_view():
    """For H > 2 the plane's first axis is the distance along the output weights: |w| u + b is the output's net."""
    net = MLP([2, 5, 1], activation="tanh", output_activation="sigmoid", dtype=F64, seed=3)
    hidden = hidden_layers.hidden_states(net, XOR.x_train)
    w, b = hidden_layers.output_line(net)
    coords, w2, b2 = hidden_layers.plane(hidden, w, b)
    assert coords.shape == (4, 2) and w2[1] == 0
    torch.testing.assert_close(coords @ w2 + b2, hidden @ w + b)
    same, w_same, _ = hidden_layers.plane(hidden[:, :2], w[:2], b)  # H = 2: the hidden space itself
    assert torch.equal(same, hidden[:, :2]) and torch.equal(w_same, w[:2])


def test_main_logs_the_hidden_space_and_the_margin(tmp_path, capsys):
    argv = ["--epochs", "40", "--image-every", "20", "--hidden", "3", "--logdir", str(tmp_path), "--run", "t",
            "--device", "cpu"]
    assert hidden_layers.main(argv) == 0
    out = capsys.readouterr().out
    assert "identity-2-2-1" in out and "never" in out and "tensorboard --logdir" in out.replace(".main", "")
    run_dir = tmp_path / "hidden_layers" / "t"
    nets = ["sigmoid-2-2-1", "sigmoid-2-3-1", "identity-2-2-1"]
    assert sorted(p.name for p in run_dir.iterdir() if p.is_dir()) == sorted(nets)
    for net in nets:
        scalars = read_scalars(run_dir / net)
        assert [s for s, _ in scalars["hidden/margin"]] == list(range(41)), net
        acc = load_run(run_dir / net)
        assert [e.step for e in acc.Images("hidden/space")] == [0, 20, 40], net
        assert [e.step for e in acc.Images("decision_boundary")] == [0, 20, 40], net
    results = json.loads((run_dir / "results.json").read_text())["runs"]
    assert results["identity-2-2-1"]["first_separable_epoch"] is None
    assert results["identity-2-2-1"]["best_margin"] <= 1e-12
    snapshot = results["sigmoid-2-3-1"]["snapshots"][-1]
    assert snapshot["epoch"] == 40 and len(snapshot["coords"]) == 4 and len(snapshot["line"]) == 3


def test_bad_flags_are_one_line(tmp_path, capsys):
    assert hidden_layers.main(["--activation", "identity", "--logdir", str(tmp_path), "--quiet"]) == 2
    assert "--activation must be non-linear" in capsys.readouterr().err
    assert hidden_layers.main(["--hidden", "2", "--logdir", str(tmp_path), "--quiet"]) == 2
    assert "--hidden must be >= 3, but got 2" in capsys.readouterr().err
    assert not (tmp_path / "hidden_layers").exists()
