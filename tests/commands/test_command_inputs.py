"""check, trace and grade on inputs that once gave a traceback or a silent wrong answer (issue 20 items 14, 15, 18,
19, 20 and the unclear list): one line naming the flag, or a row that says what did not run."""

import subprocess
import sys

import pytest

from commands.cli import main
from commands.grade import parse_loss


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_trace_refuses_a_class_index_that_is_not_a_whole_number(capsys):
    base = ["trace", "--sizes", "2", "3", "3", "--output-activation", "softmax", "--input", "1", "2"]
    code, out, err = run([*base, "--target", "1.7"], capsys)
    assert code == 2 and out == ""
    assert "--target for cross_entropy is one class index, a whole number in [0, 2] for n_L = 3, but got 1.7" in err
    code, _, err = run([*base, "--target", "3"], capsys)
    assert code == 2 and "but got 3" in err
    assert run([*base, "--target", "1"], capsys)[0] == 0


def test_trace_refuses_an_lr_beyond_the_dtype(capsys):
    code, out, err = run(["trace", "--dtype", "float32", "--lr", "1e308"], capsys)
    assert code == 2 and "--lr 1e+308 does not fit --dtype float32" in err and "Traceback" not in out + err


@pytest.mark.parametrize("spec,message", [
    ("squared_error:sum:mean", "gives two reductions ('sum' and 'mean')"),
    ("squared_error:half:half", "gives :half twice"),
])
def test_grade_refuses_a_loss_with_two_options_of_one_kind(spec, message, capsys):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_loss(spec)
    assert parse_loss("squared_error:sum:half").reduction == "sum"


def test_grade_refuses_a_file_that_is_not_python(tmp_path, capsys):
    text = tmp_path / "file.txt"
    text.write_text("def backward(net, cache, y, loss_fn):\n    return None\n")
    code, out, err = run(["grade", f"{text}:backward"], capsys)
    assert code == 2 and "is not a Python file: expected a .py file" in err and "NoneType" not in err


def test_check_paths_all_in_float16_says_which_paths_do_not_run(capsys):
    code, out, err = run(["check", "--paths", "all", "--dtype", "float16", "--no-fd", "--sizes", "3", "4", "2",
                          "--batch", "3"], capsys)
    assert "Traceback" not in out + err
    row = next(line for line in out.splitlines() if line.startswith("c "))
    assert "not run: the C loop supports float32 and float64, but the network is torch.float16" in row
    assert code == 0, out


@pytest.mark.parametrize("command", ["check", "trace"])
def test_widths_beyond_memory_are_refused_before_anything_is_built(command, capsys):
    code, out, err = run([command, "--sizes", "4", "1000000", "1000000", "3"], capsys)
    assert code == 2 and out == ""
    if command == "check":
        assert "--sizes 4 1000000 1000000 3 in float64 needs about" in err and "memory free" in err
    else:
        assert "trace writes out every weight" in err


def test_trace_counts_weights_from_the_flags():
    """The 2,000-weight limit is checked from the flags: a network of 10^6 x 10^6 is never drawn."""
    import commands.cli as cli

    built = []
    real = cli.MLP
    cli.MLP = lambda *a, **k: built.append(a) or real(*a, **k)
    try:
        assert main(["trace", "--sizes", "2", "2000", "1"]) == 2
    finally:
        cli.MLP = real
    assert not built


def test_a_closed_pipe_is_no_traceback():
    """`manual-backprop check | head -1`: the reader leaves early; the command stops without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "check", "--sizes", "4", "8", "8", "8", "3",
                             "--no-fd"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # nobody reads: every write meets a closed pipe
    _, err = proc.communicate(timeout=120)
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err.decode()[-2000:]
    assert proc.returncode == 141


def test_finite_differences_too_long_to_wait_for_are_refused_with_the_way_out(capsys, monkeypatch):
    """check --sizes 2 1000000 2 ran for over five minutes without a word: the finite differences' work is counted
    first (the passes the oracle will make, each the network's multiply-adds) and refused in one line."""
    from reference import finite_diff

    passes = []
    monkeypatch.setattr(finite_diff, "finite_differences", lambda *a, **k: passes.append(1) / 0)
    code, _, err = run(["check", "--sizes", "2", "1000000", "2"], capsys)
    assert code == 2 and not passes and len(err.strip().splitlines()) == 1
    assert "1669 forward passes" in err and "--fd-samples" in err and "--no-fd" in err
    # the count is the oracle's own: one base pass and two per entry it perturbs (at most 200 of each tensor)
    assert finite_diff.finite_difference_work([2, 1000000, 2], 16, max_per_tensor=200) == (1669, 1669 * 16 * 4000000)
    assert finite_diff.finite_difference_work([2, 3, 1], 2, bias=False)[0] == 1 + 2 * (6 + 6 + 3 + 2)
