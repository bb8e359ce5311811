"""What a new user hit: reprs that dumped thousands of numbers, and progress bars redrawn into log files."""

import io

import torch

from experiments import softmax_outputs
from experiments.common import progress_bars
from manual_backprop import MLP
from manual_backprop.datasets import load_dataset
from manual_backprop.population import Population, PopulationTrainer
from manual_backprop.training import History, train

F64 = torch.float64
XOR = load_dataset("xor", dtype=F64)


def test_history_repr_is_one_short_line():
    h = train(MLP([2, 3, 1], dtype=F64, seed=0), XOR, mode="online", lr=0.5, epochs=300)
    text = repr(h)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("History(mode='online', epochs=300, updates=1200, train_loss=")
    assert f"train_loss={h.final['train_loss']:.4g}" in text and "stop_reason='max_epochs'" in text
    assert repr(History(mode="batch")) == "History(mode='batch', no epochs recorded)"
    assert len(h.to_dict()["train_loss"]) == 301  # the numbers are all still there


def test_population_history_repr_is_one_short_line():
    pop = Population([2, 2, 1], seeds=list(range(64)), dtype=F64)
    h = PopulationTrainer(pop, XOR, mode="batch", lr=[4.0] * 64, epochs=50, target_loss=0.2).run()
    text = repr(h)
    assert "\n" not in text and len(text) < 200, text
    assert text.startswith("PopulationHistory(mode='batch', K=64, epochs=") and "stop_reason: " in text
    assert f"success_rate={h.success_rate():.3g}" in text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(monkeypatch):
    monkeypatch.setattr("sys.stderr", _Terminal())
    assert progress_bars() and not progress_bars(quiet=True)
    monkeypatch.setattr("sys.stderr", io.StringIO())  # redirected to a file or a pipe
    assert not progress_bars()


def test_an_experiment_writes_no_bars_when_stderr_is_not_a_terminal(tmp_path, capsys):
    assert softmax_outputs.main(["--epochs", "3", "--logdir", str(tmp_path), "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "", captured.err[:300]
    assert "sigmoid_squared_error" in captured.out
