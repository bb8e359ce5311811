"""The `manual-backprop check` command: the three-way comparison from flags, with an honest exit code."""

import subprocess
import sys

import pytest

from commands.cli import main


@pytest.mark.parametrize("argv", [
    ["--sizes", "4", "8", "3"],
    ["--sizes", "3", "16", "16", "2", "--activation", "relu", "tanh", "--output-activation", "sigmoid",
     "--loss", "binary_cross_entropy", "--batch", "5", "--fd-samples", "30"],
    ["--sizes", "2", "5", "1", "--activation", "leaky_relu", "--output-activation", "identity", "--loss", "mse",
     "--reduction", "sum", "--half", "--dtype", "float32", "--device", "cpu"],
])
def test_check_passes_and_prints_the_table(argv, capsys):
    assert main(["check", *argv]) == 0
    out = capsys.readouterr().out
    assert "manual~autograd" in out and "PASS: every layer agrees" in out


def test_check_fails_when_a_layer_disagrees(monkeypatch, capsys):
    """Break one derivative on purpose: the command must notice and exit 1."""
    from manual_backprop.activations import Tanh

    monkeypatch.setattr(Tanh, "derivative", lambda self, x: 1.0 - 0.9 * x * x)
    assert main(["check", "--sizes", "3", "4", "2", "--activation", "tanh"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and " NO" in out


def test_check_refuses_bad_flags(capsys):
    assert main(["check", "--sizes", "3", "0", "2"]) == 2
    assert "sizes[1] must be a positive width, but got 0" in capsys.readouterr().err
    assert main(["check", "--loss", "cross_entropy", "--output-activation", "sigmoid"]) == 2
    assert "needs output_activation='softmax'" in capsys.readouterr().err


def test_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "commands.cli", "check", "--sizes", "2", "3", "1",
                             "--output-activation", "sigmoid"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "PASS" in result.stdout


def test_check_paths_all_proves_every_path_of_the_device(capsys):
    """`check --paths all` adds one row per fast path and population engine of this device, each proven."""
    from commands.cli import main

    assert main(["check", "--paths", "all", "--no-fd", "--sizes", "3", "4", "2", "--batch", "3"]) == 0
    out = capsys.readouterr().out
    for path in ("fused-exact", "fused", "population-api", "population-eager", "population-compiled"):
        assert f"\n{path} " in out, path
    assert "disagrees" not in out and "error:" not in out and out.count("agrees") >= 5


def test_check_paths_one_failing_path_is_its_own_error_row_and_the_table_goes_on(monkeypatch, capsys):
    """A path that cannot run (issue 22: it aborted the table, reported as DISAGREES) is one row with its reason."""
    import reference.update_proof as proof
    from commands.cli import main

    real = proof.path_update

    def broken(path, *args):
        if path == "fused":
            raise RuntimeError("no kernel for this\ndtype")
        return real(path, *args)

    monkeypatch.setattr(proof, "path_update", broken)
    assert main(["check", "--paths", "all", "--no-fd", "--sizes", "3", "4", "2", "--batch", "3"]) == 1
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.strip()}
    assert rows["fused"].endswith("error: RuntimeError: no kernel for this dtype")
    for path in ("fused-exact", "population-api", "population-eager", "population-compiled"):
        assert rows[path].endswith("agrees"), rows[path]
