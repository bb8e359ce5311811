"""`manual-backprop grade MODULE:FUNCTION`: a student's backward phase against autograd and finite differences,
with the classic mistake named where a layer disagrees (students as written in tests/commands/student_mistakes.py)."""

import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from commands.cli import main
from commands.grade import SATURATION, battery, grade, load_function, parse_loss

HERE = Path(__file__).resolve().parent
STUDENTS = HERE / "student_mistakes.py"
TEMPLATE = HERE.parents[1] / "examples" / "student_backward.py"

_spec = importlib.util.spec_from_file_location("student_mistakes", STUDENTS)
students = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(students)


def run(argv, capsys):
    code = main(["grade", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_a_correct_backward_passes_every_network(capsys):
    code, out, _ = run([f"{STUDENTS}:correct"], capsys)
    assert code == 0, out[-2000:]
    assert "PASS: every layer of all 36 networks agrees with autograd and finite differences" in out
    assert "dW~autograd" in out and "db~fd" in out and " NO " not in out


def test_a_pass_without_finite_differences_claims_none(capsys):
    code, out, _ = run([f"{STUDENTS}:correct", "--no-fd"], capsys)
    assert code == 0, out[-2000:]
    assert "norm-relative tolerance 1e-10 vs autograd, no finite differences; " in out.splitlines()[0]
    assert out.rstrip().endswith("PASS: every layer of all 36 networks agrees with autograd (finite differences not run)")


def test_gradients_or_a_tuple_and_a_dotted_module_all_work(monkeypatch, capsys):
    monkeypatch.chdir(HERE)
    monkeypatch.syspath_prepend(str(HERE))
    code, out, _ = run(["student_mistakes:correct_gradients", "--no-fd"], capsys)
    assert code == 0, out[-2000:]


def test_every_loss_and_float32(capsys):
    code, out, _ = run([str(STUDENTS) + ":correct", "--loss", "cross_entropy", "bce", "squared_error:sum:half",
                        "--no-fd"], capsys)
    assert code == 0 and "all 108 networks" in out, out[-2000:]
    code, out, _ = run([str(STUDENTS) + ":correct", "--dtype", "float32"], capsys)
    assert code == 0, out[-2000:]


def test_the_battery_covers_depths_activations_batches_and_saturation():
    cases = battery([parse_loss("squared_error")])
    assert {c.net.num_layers for c in cases} == {1, 2, 3, 4}
    assert {c.net.activation_functions[0].name for c in cases if c.net.num_layers > 1} == {
        "sigmoid", "tanh", "relu", "leaky_relu", "identity"}
    assert {c.x.shape[0] for c in cases} == {1, 5}
    saturated = [c for c in cases if c.saturated]
    assert saturated and SATURATION > 1
    for c in saturated:
        cache = c.net.forward_cache(c.x)
        fprime = c.net.activation_functions[0].derivative(cache.activations[1])
        assert fprime.min() < 1e-3, f"case {c.index}: no unit is saturated"


MISTAKES = [  # student function, the diagnosis it must get, exit status
    ("no_fprime", "f' missing in every layer", 1),
    ("no_fprime_hidden", "f' missing in the hidden layers", 1),
    ("wrong_sign", "the wrong sign", 1),
    ("w_not_transposed", "W where W^T belongs in the hidden delta", 2),  # raises on layers that are not square
    ("dw_transposed", "W where W^T belongs in dE/dW", 1),
    ("missing_mean", "a missing 1/m", 1),
    ("bias_not_summed", "bias gradient not summed over the samples (the deltas themselves)", 1),
    ("bias_first_sample", "bias gradient not summed over the samples (the first sample only)", 1),
    ("fprime_of_net", "f' taken of net instead of the activity x in every layer", 1),
    ("fprime_at_activity", "f' evaluated at the activity x instead of net in every layer", 1),
    ("dropped_two", "a factor 2 off (the 2 of d(e^2)/dx dropped)", 1),
    ("no_fprime_and_wrong_sign", "f' missing in every layer and the wrong sign", 1),
]


@pytest.mark.parametrize("function,diagnosis,code", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_classic_mistake_is_named(function, diagnosis, code):
    report = grade(getattr(students, function), function, finite_diff=False)
    assert report.exit_code == code
    assert [m.label for m in report.diagnosis.explains] == [diagnosis], report.text()[-3000:]
    bad = [r for r in report.rows if not r.ok and r.case.student is not None]
    assert bad and all(r.fits for r in bad), "every disagreeing layer names the mistake that fits it"
    text = report.text()
    assert f"Diagnosis: {diagnosis}, at tests/commands/student_mistakes.py:" in text  # the student's line
    assert "FAIL" in text if code == 1 else "UNUSABLE" in text


def test_each_mistake_is_named_on_the_other_losses_too():
    for function, diagnosis in [("no_fprime_hidden", "f' missing in the hidden layers"),
                                ("missing_mean", "a missing 1/m"), ("wrong_sign", "the wrong sign")]:
        report = grade(getattr(students, function), function, losses=["cross_entropy", "bce"], finite_diff=False)
        assert [m.label for m in report.diagnosis.explains] == [diagnosis]


def test_the_cli_names_the_layer_and_the_mistake(capsys):
    code, out, _ = run([f"{STUDENTS}:no_fprime_hidden", "--no-fd"], capsys)
    assert code == 1
    row = next(line for line in out.splitlines() if line.startswith("   3  3-4-4 sigmoid, tanh out"))
    assert row.split()[6] == "1/2" and "NO   f' missing" in row  # layer 1 of 2 disagrees, and why
    assert "FAIL: 54 of 102 layers disagree" in out


def test_a_near_miss_is_no_classic_mistake(capsys):
    report = grade(students.off_by_a_little, "off_by_a_little", finite_diff=False)
    assert report.exit_code == 1 and not report.diagnosis.explains
    assert "none of the classic mistakes" in report.text()


@pytest.mark.parametrize("function,message", [
    ("raises", "raised ZeroDivisionError: division by zero, at "),
    ("returns_none", "must return a Gradients or a tuple (grad_weights, grad_biases) of two lists, but returned "
                     "NoneType"),
    ("returns_three", "but returned a tuple of length 3"),
    ("too_few_layers", "returned grad_weights with 0 entries, but the network has 1 layer"),
    ("returns_numpy", "returned grad_weights[0] as a ndarray; expected a torch.Tensor of shape (4, 3)"),
    ("wrong_dtype", "with dtype torch.float32 on cpu; expected torch.float64 on cpu, like net.weights[0]"),
    ("flattened", "dW has shape (12,), expected (4, 3)"),
    ("takes_three_arguments", "takes 3 positional arguments but 4 were given"),
    ("uses_autograd", "autograd is off here"),
])
def test_unusable_answers_get_one_clear_message_and_exit_2(function, message, capsys):
    code, out, err = run([f"{STUDENTS}:{function}", "--no-fd"], capsys)
    assert code == 2
    assert message in out and f"student_mistakes.py:{function}" in out
    assert "UNUSABLE" in out and "expected FUNCTION(net, cache, y, loss_fn)" in out
    assert "Traceback" not in out + err and "reference/grade" not in out


def test_the_student_exception_points_at_the_students_line(capsys):
    _, out, _ = run([f"{STUDENTS}:raises", "--no-fd"], capsys)
    line = next(n for n, text in enumerate(STUDENTS.read_text().splitlines(), 1) if "return 1 / 0" in text)
    assert f"student_mistakes.py:{line} in raises: return 1 / 0" in out
    assert "(and in 35 more cases)" in out


def test_a_backward_that_changes_the_network_fails(capsys):
    code, out, _ = run([f"{STUDENTS}:updates_in_place", "--no-fd"], capsys)
    assert code == 1 and "changed net.weights[0] in place: the backward phase must be pure" in out


@pytest.mark.parametrize("target,message", [
    ("no_such_module_xyz:backward", "cannot import 'no_such_module_xyz'"),
    ("missing_file.py:backward", "no file 'missing_file.py'"),
    (f"{STUDENTS}:nothing_here", "has no function 'nothing_here'; it defines ["),
    (f"{STUDENTS}:NOT_A_FUNCTION", "is not a function but int 42"),
    (f"{STUDENTS}:", "expected MODULE:FUNCTION"),
])
def test_a_function_that_cannot_be_loaded_is_one_line_and_exit_2(target, message, capsys):
    code, out, err = run([target], capsys)
    assert code == 2 and message in err and out == "" and "Traceback" not in err


def test_a_module_that_fails_to_import_names_its_line(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\n\ndef backward(net, cache, y, loss_fn)\n    return None\n")
    code, _, err = run([f"{broken}:backward"], capsys)
    assert code == 2 and f"SyntaxError: expected ':', at {broken}:3: def backward(net, cache, y, loss_fn)" in err
    assert "line 3)" not in err  # the place once, with its code, not python's "(broken.py, line 3)" besides
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('no GPU here')\n")
    code, _, err = run([str(raising)], capsys)  # FUNCTION defaults to backward
    assert code == 2 and "importing" in err and "RuntimeError: no GPU here" in err and "raising.py:1" in err
    lonely = tmp_path / "lonely.py"  # found, but its own helper file is not beside it: not "cannot import lonely"
    lonely.write_text("import torch\nfrom my_helpers import fprime\n")
    code, _, err = run([str(lonely)], capsys)
    assert code == 2 and f"importing {lonely} raised ModuleNotFoundError: No module named 'my_helpers', at " in err
    assert "lonely.py:2 in <module>: from my_helpers import fprime" in err and "cannot import" not in err


def test_a_bad_loss_is_a_bad_flag(capsys):
    code, _, err = run([f"{STUDENTS}:correct", "--loss", "hinge"], capsys)
    assert code == 2 and "loss must be one of" in err


def test_the_template_as_shipped_says_what_to_fill_in(capsys):
    code, out, _ = run([f"{TEMPLATE}:backward", "--no-fd"], capsys)
    assert code == 2 and "a TODO left unfilled?" in out


def test_the_template_filled_in_passes(tmp_path, capsys):
    """The four TODO lines of examples/student_backward.py, filled as the lecture says, pass the whole battery."""
    text = TEMPLATE.read_text()
    fills = {
        "delta = ...  # TODO dE/dnet^L":
            "delta = c * 2 * (x[L] - y) * derivative(net.activation_functions[-1], x[L])  #",
        "grad_weights[k] = ...  # TODO": "grad_weights[k] = delta.T @ x[k]  #",
        "grad_biases[k] = ...  # TODO": "grad_biases[k] = delta.sum(0)  #",
        "delta = ...  # TODO delta of layer k":
            "delta = derivative(net.activation_functions[k - 1], x[k]) * (delta @ net.weights[k])  #",
    }
    for todo, line in fills.items():
        assert text.count(todo) == 1, todo
        text = text.replace(todo, line)
    mine = tmp_path / "my_backward.py"
    mine.write_text(text)
    code, out, _ = run([f"{mine}:backward", "--loss", "squared_error", "cross_entropy"], capsys)
    assert code == 0, out[-3000:]


def test_load_function_defaults_to_backward():
    fn, name = load_function(str(TEMPLATE))
    assert fn.__name__ == "backward" and name.endswith("student_backward.py:backward")


def test_grading_changes_no_global_state():
    before = torch.is_grad_enabled(), torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()
    grade(students.correct, "correct", finite_diff=False)
    assert (torch.is_grad_enabled(), torch.backends.cuda.matmul.allow_tf32, torch.get_num_threads()) == before


def _latin1_submission(folder: Path, coding: bool = False) -> Path:
    """The correct backward in a file with a Latin-1 byte in a comment (an accented name, saved as Latin-1)."""
    path = folder / "francois.py"
    head = b"# -*- coding: latin-1 -*-\n" if coding else b""
    path.write_bytes(head + b"# Fran\xe7ois, homework 3\n" + STUDENTS.read_bytes() + b"\nbackward = correct\n")
    return path


def test_a_file_that_is_not_utf8_is_refused_as_python_refuses_it(tmp_path, monkeypatch, capsys):
    """`python francois.py` stops at the Latin-1 byte with a SyntaxError (the import machinery lets a comment's
    bytes pass): the grader refuses it the same way, in one line, for a path and for a dotted module."""
    path = _latin1_submission(tmp_path)
    ran = subprocess.run([sys.executable, str(path)], capture_output=True, text=True)
    assert ran.returncode == 1 and "SyntaxError: Non-UTF-8 code starting with '\\xe7'" in ran.stderr
    code, out, err = run([str(path), "--no-fd"], capsys)
    assert code == 2 and out == "", out[-2000:]
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert (f"manual-backprop grade: cannot load {path}: SyntaxError: Non-UTF-8 code starting with '\\xe7' on "
            "line 1, but no encoding declared") in err and "save the file as UTF-8" in err
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, _, err = run(["francois:backward", "--no-fd"], capsys)
    assert code == 2 and "cannot load francois.py: SyntaxError: Non-UTF-8 code" in err, err


def test_a_file_that_declares_its_encoding_is_graded(tmp_path, capsys):
    code, out, _ = run([str(_latin1_submission(tmp_path, coding=True)), "--no-fd"], capsys)
    assert code == 0 and "PASS" in out, out[-2000:]


def test_a_class_row_for_a_file_that_is_not_utf8_says_so(tmp_path, capsys):
    folder = tmp_path / "class"
    folder.mkdir()
    _latin1_submission(folder)
    code = main(["grade", str(folder), "--no-fd", "--csv", str(tmp_path / "g.csv"), "--json",
                 str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert code == 1, out
    (row,) = json.loads((tmp_path / "g.json").read_text())
    assert row["verdict"] == "unusable" and row["layers_total"] == 0, row
    assert "SyntaxError: Non-UTF-8 code starting with '\\xe7' on line 1, but no encoding declared" in row["problem"]
    assert "francois: unusable (cannot load francois.py: SyntaxError: Non-UTF-8 code" in out  # no "0/0 layers"


def _overwrites_the_output(net, cache, y, loss_fn):
    """Right gradients, but the output delta is made in the caller's own x^L: delta = x[L]; delta -= y."""
    x, L = cache.activations, net.num_layers
    fp = students.fprime(net.activation_functions[-1], x[L])
    delta = x[L]
    delta -= y  # cache.activations[L] is now x^L - y
    delta *= loss_fn.scale(*y.shape) * 2 * fp
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k], grad_b[k] = delta.T @ x[k], delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * students.fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


@pytest.mark.parametrize("student,changed", [
    (_overwrites_the_output, "cache.activations["),
    (lambda net, cache, y, loss_fn: (students.correct(net, cache, y, loss_fn), y.zero_())[0], "y"),
])
def test_a_backward_that_overwrites_its_inputs_fails(student, changed):
    report = grade(student, "student", finite_diff=False)
    text = report.text()
    assert report.exit_code == 1 and all(r.ok for r in report.rows), text[-2000:]
    assert f"student changed {changed}" in text and "the backward phase must be pure" in text
    assert text.rstrip().endswith("FAIL: every layer agrees, but the function changed its inputs")


def test_ctrl_c_of_one_file_is_one_line_and_exit_130(tmp_path):
    """Ctrl-C is how a student stops a backward that never returns: one line, no traceback (it printed the
    interpreter's traceback, from the command down to the student's while loop)."""
    hang = tmp_path / "hang.py"
    hang.write_text("def backward(net, cache, y, loss_fn):\n    while True:\n        pass\n")
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "grade", str(hang), "--no-fd"],
                            cwd=HERE.parents[1], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(4)  # torch imported, the loop running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err == "manual-backprop grade: stopped by Ctrl-C\n" and "Traceback" not in out
