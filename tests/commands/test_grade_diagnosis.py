"""The grader names the mistakes of issue 21 right, at the student's own line, and shows the factor yours /
autograd: each slip written out whole in tests/commands/student_mistakes.py, its wrong line marked "# the slip"."""

import csv
import importlib.util
import inspect
import json
from pathlib import Path

import pytest
import torch

from commands.cli import main
from commands.grade import grade
from commands.grade_diagnosis import Diagnosis
from commands.grade_mistakes import MISTAKES
from commands.grade_worker import _summary

HERE = Path(__file__).resolve().parent
STUDENTS = HERE / "student_mistakes.py"

_spec = importlib.util.spec_from_file_location("student_mistakes", STUDENTS)
students = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(students)


def slip_line(function: str) -> int:
    """The line number, in student_mistakes.py, of the function's first line marked '# the slip'."""
    lines, first = inspect.getsourcelines(getattr(students, function))
    return first + next(i for i, text in enumerate(lines) if "# the slip" in text)


SLIPS = [  # student, the diagnosis it must get, exit status, what it must not be called
    ("dw_without_transpose", "delta @ x where delta^T @ x belongs in dE/dW", 2, "the hidden delta is delta @ W"),
    ("deltas_summed_first", "the deltas summed over the samples before back-propagating", 1, "a missing 1/m"),
    ("deltas_summed_flat", "the deltas summed over the samples before back-propagating", 1, "a missing 1/m"),
    ("mean_taken_twice", "an extra 1/m in the output delta", 1, "averaged instead"),
    ("dw_divided_by_m", "dE/dW divided by m", 1, "none of the classic mistakes"),
    ("bias_summed_over_units", "bias gradient not summed over the samples (summed over the units instead)", 1,
     "shapes that no classic mistake explains"),
    ("wrong_sign_written_out", "the wrong sign", 1, "f' missing"),
    ("hidden_deltas_summed", "the deltas summed over the samples before back-propagating to the layer below", 1,
     "a missing 1/m"),
    ("hidden_deltas_summed_flat", "the deltas summed over the samples before back-propagating to the layer below",
     1, "a missing 1/m"),
    ("hidden_deltas_summed_once", "the deltas summed over the samples before back-propagating from the output "
     "layer (there only)", 1, "back-propagating to the layer below"),
    ("dw_and_db_divided_by_m", "dE/dW and dE/db each divided by m", 1, "an extra 1/m in the output delta"),
]


@pytest.mark.parametrize("function,diagnosis,code,not_this", SLIPS, ids=[s[0] for s in SLIPS])
def test_each_slip_is_named_in_one_line_at_the_students_line(function, diagnosis, code, not_this, capsys):
    status = main(["grade", f"{STUDENTS}:{function}", "--no-fd"])
    out = capsys.readouterr().out
    assert status == code, out[-3000:]
    found = [line for line in out.splitlines() if line.startswith("Diagnosis: ")]
    assert len(found) == 1, found
    assert found[0].startswith(f"Diagnosis: {diagnosis}, at "), found[0]
    assert f"student_mistakes.py:{slip_line(function)}" in found[0] and "# the slip" in found[0]
    assert not_this not in out


@pytest.mark.parametrize("function,diagnosis", [s[:2] for s in SLIPS], ids=[s[0] for s in SLIPS])
def test_each_slip_is_named_on_the_other_losses_and_in_float32(function, diagnosis):
    for options in ({"losses": ["cross_entropy", "bce", "squared_error:sum:half"]}, {"dtype": torch.float32}):
        report = grade(getattr(students, function), function, finite_diff=False, **options)
        assert [m.label for m in report.diagnosis.explains] == [diagnosis], (options, report.text()[-2000:])
        assert "student_mistakes.py:" in report.diagnosis.where[diagnosis], options
        assert "# the slip" in report.diagnosis.where[diagnosis], options


def test_a_student_who_prints_is_not_printed_again_by_the_trace(capsys):
    def loud(net, cache, y, loss_fn):
        print("hello from the student")
        return students.dw_divided_by_m(net, cache, y, loss_fn)

    grade(loud, "loud", finite_diff=False)
    assert capsys.readouterr().out.count("hello from the student") == 36  # once per case, not for the trace


def test_a_shape_error_names_the_slip_behind_it_not_a_fixed_hint():
    """delta @ W.T raises on layers that are not square; its diagnosis (and only it) says so, at the line."""
    report = grade(students.w_not_transposed, "w_not_transposed", finite_diff=False)
    assert [m.label for m in report.diagnosis.explains] == ["W where W^T belongs in the hidden delta"]
    assert report.diagnosis.raised > 0
    text = report.text()
    assert "delta @ x where delta^T @ x belongs" not in text


def test_no_diagnosis_still_names_the_line_of_the_first_wrong_number():
    report = grade(students.off_by_a_little, "off_by_a_little", finite_diff=False)
    line = next(n for n, text in enumerate(STUDENTS.read_text().splitlines(), 1) if "(1 + 1e-6)" in text)
    assert f"is made at tests/commands/student_mistakes.py:{line}: return [g * (1 + 1e-6)" in report.text()
    assert " 1.000001 " in report.table()  # a factor near 1 keeps the digits that make it differ from 1


def test_the_factor_column_is_yours_over_autograd():
    report = grade(students.dw_divided_by_m, "dw_divided_by_m", finite_diff=False)
    for r in report.rows:
        B = r.case.x.shape[0]
        assert r.factors["dW"] == pytest.approx(1 / B, rel=1e-9), r.record()  # 0.2 = 1/B at B = 5
        assert r.factors["db"] == pytest.approx(1.0, rel=1e-9)
    table = report.table()
    assert "dW yours/autograd" in table and "db yours/autograd" in table
    row = next(line for line in table.splitlines() if line.startswith("   2  3-2 identity out"))
    assert row.split()[5:8] == ["1/1", "8.0e-01", "-"] and row.split()[8] == "0.2"
    sign = grade(students.wrong_sign, "wrong_sign", finite_diff=False)
    assert all(r.factors["dW"] == pytest.approx(-1.0) for r in sign.rows)
    summed = grade(students.deltas_summed_first, "deltas_summed_first", finite_diff=False)
    assert any(not r.ok and r.factors["dW"] is None for r in summed.rows)  # no multiple: "-"


def test_the_table_goes_to_csv_and_json_with_the_factor(tmp_path, capsys):
    code = main(["grade", f"{STUDENTS}:dw_divided_by_m", "--no-fd", "--csv", str(tmp_path / "t.csv"),
                 "--json", str(tmp_path / "t.json")])
    assert code == 1 and "per-layer table in" in capsys.readouterr().out
    with open(tmp_path / "t.csv") as f:
        rows = list(csv.DictReader(f))
    records = json.loads((tmp_path / "t.json").read_text())
    assert len(rows) == len(records) == 102
    five = [(r, j) for r, j in zip(rows, records) if r["B"] == "5"]
    assert five and all(r["dW_yours_over_autograd"] == "0.2" and j["dW_yours_over_autograd"] == 0.2
                        and j["db_yours_over_autograd"] == 1.0 and j["ok"] is False for r, j in five)
    assert all(j["ok"] for j in records if j["B"] == 1)


def test_an_unwritable_csv_is_refused_before_any_grading(tmp_path, capsys):
    (tmp_path / "a_folder").mkdir()
    for flag, path, message in (("--csv", "/proc/no/such/t.csv", "--csv '/proc/no/such/t.csv' cannot be written"),
                                ("--json", str(tmp_path / "a_folder"), "is a folder; expected a file to write")):
        code = main(["grade", f"{STUDENTS}:correct", "--no-fd", flag, path])
        captured = capsys.readouterr()
        assert code == 2 and message in captured.err and captured.out == "", captured


def slip_lines(function: str) -> list:
    """Every line number, in student_mistakes.py, of the function's lines marked '# the slip'."""
    lines, first = inspect.getsourcelines(getattr(students, function))
    return [first + i for i, text in enumerate(lines) if "# the slip" in text]


def test_deltas_summed_in_the_hidden_step_are_named_at_the_step_that_sums_them():
    """The output layer right, each delta summed over the samples on its way down: not "a missing 1/m", and the
    layers it names are the ones below the output."""
    report = grade(students.hidden_deltas_summed, "hidden_deltas_summed", finite_diff=False)
    label = "the deltas summed over the samples before back-propagating to the layer below"
    assert [m.label for m in report.diagnosis.explains] == [label], report.text()[-3000:]
    for r in report.rows:
        top, B = r.k == r.case.net.num_layers - 1, r.case.x.shape[0]
        assert r.ok == (top or B == 1), r.record()  # the output layer, and every layer at B = 1, agree
        assert r.ok or r.fits == [label], r.record()
    text = report.text()
    assert "Your output layer's dE/dW and dE/db agree in every network; only the layers below it disagree" in text
    assert "a missing 1/m" not in text and "no single classic mistake" not in text


def test_a_1_over_m_in_dw_and_in_db_names_both_lines_not_the_output_delta(capsys):
    """Each gradient divided by m gives the numbers of one extra 1/m in the output delta; the diagnosis is the
    one the student's code makes, at both of its lines, and the class row holds both."""
    status = main(["grade", f"{STUDENTS}:dw_and_db_divided_by_m", "--no-fd"])
    out = capsys.readouterr().out
    assert status == 1
    dw_line, db_line = slip_lines("dw_and_db_divided_by_m")
    lines = out.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("Diagnosis: "))
    assert lines[at].startswith("Diagnosis: dE/dW and dE/db each divided by m, at ") and f":{dw_line}: " in lines[at]
    assert lines[at + 1].startswith("  and at ") and f"student_mistakes.py:{db_line}: grad_b[k]" in lines[at + 1]
    assert "an extra 1/m in the output delta" not in out
    report = grade(students.dw_and_db_divided_by_m, "dw_and_db_divided_by_m", finite_diff=False)
    row = _summary(report)
    assert row["mistakes"] == ["dE/dW and dE/db each divided by m"]
    assert [line.split(": ")[0].rsplit(":", 1)[1] for line in row["lines"]] == [str(dw_line), str(db_line)]
    twice = grade(students.mean_taken_twice, "mean_taken_twice", finite_diff=False)  # its own slip stays named
    assert [m.label for m in twice.diagnosis.explains] == ["an extra 1/m in the output delta"]
    assert not twice.diagnosis.also


@pytest.mark.parametrize("function,kinds", [("nan_in_first_dw", "(NaN)"), ("inf_in_dw", "(NaN and inf)")])
def test_a_gradient_that_is_not_finite_is_said_so_at_the_students_line(function, kinds, capsys):
    status = main(["grade", f"{STUDENTS}:{function}", "--no-fd"])
    out = capsys.readouterr().out
    assert status == 1, out[-3000:]
    found = [line for line in out.splitlines() if line.startswith("Diagnosis: ")]
    assert len(found) == 1, found
    label = ("the gradient of layer 1 is not finite" if function == "nan_in_first_dw" else
             "the gradients of layers 1, 2, 3 and 4 are not finite")  # plural where several layers are
    assert found[0].startswith(f"Diagnosis: {label} {kinds}: "), found[0]
    assert f"student_mistakes.py:{slip_line(function)}: grad_w[k] = " in found[0] and "# the slip" in found[0]
    assert "none of the classic mistakes" not in out
    assert "NO   dW not finite" in out  # the table's rows say which tensor
    report = grade(getattr(students, function), function, finite_diff=False)
    assert _summary(report)["mistakes"][0] == f"{label} {kinds}"


def test_a_nan_with_a_classic_mistake_elsewhere_still_names_the_mistake():
    """NaN in one case's dE/dW, a missing f' in every network: the NaN is said, and the mistake is named too."""
    def student(net, cache, y, loss_fn):
        grad_w, grad_b = students.no_fprime_hidden(net, cache, y, loss_fn)
        if net.num_layers == 4 and y.shape[0] == 5 and net.activation_functions[0].name == "tanh":
            grad_w[0] = grad_w[0] * float("nan")
        return grad_w, grad_b

    report = grade(student, "student", finite_diff=False)
    d = report.diagnosis
    assert d.not_finite_label == "the gradient of layer 1 is not finite (NaN)"
    assert [m.label for m in d.explains] == ["f' missing in the hidden layers"], report.text()[-3000:]
    text = report.text()
    assert "dE/dW holds NaN in 1 of 36 networks, at tests/commands/test_grade_diagnosis.py:" in text
    assert "The other 107 disagreeing tensors hold finite numbers:" in text


def test_one_disagreeing_tensor_reads_in_the_singular():
    report = grade(students.off_in_one_network, "off_in_one_network", finite_diff=False)
    text = report.text()
    assert report.diagnosis.failing == 1
    assert "reproduces the one disagreeing tensor; compare it with the autograd column." in text
    assert text.rstrip().endswith("FAIL: 1 of 102 layers disagrees")
    assert "1 disagreeing tensors" not in text
    explained = Diagnosis(1, [MISTAKES[0]], [], raised=1).lines()
    assert ("  the one disagreeing tensor is what this mistake gives, computed with the library's own functions; "
            "the shape error of the 1 call that raised is the one it makes") in explained


def test_a_class_row_gives_the_first_wrong_numbers_line_and_tensor_apart():
    """No mistake explains it: the row's line is a line of the file (file:line: code), as every row's is, and
    which tensor it made goes in first_wrong; the progress line says it is the first wrong number's."""
    from commands.grade_class import progress_line

    report = grade(students.off_in_one_network, "off_in_one_network", finite_diff=False)
    row = _summary(report)
    line = next(n for n, text in enumerate(STUDENTS.read_text().splitlines(), 1) if "w[0] = w[0] * (1 + 1e-6)" in text)
    assert row["lines"] == [f"tests/commands/student_mistakes.py:{line}: w[0] = w[0] * (1 + 1e-6)"]
    assert row["first_wrong"] == "dW of layer 1 in case 26 (3-5-4-6-2 tanh, identity out, B=5)"
    shown = progress_line({"student": "o", "verdict": "fail", "layers_right": 101, "layers_total": 102,
                           "mistakes": "", "line": row["lines"][0], "first_wrong": row["first_wrong"],
                           "problem": "", "seconds": 0.5}, 1, 1)
    assert shown == f"[1/1] o: fail 101/102 layers, first wrong number at {row['lines'][0]}, 0.5 s"


def test_partial_fits_are_named_as_partial_in_a_class_row():
    d = Diagnosis(10, [], [(MISTAKES[0], 4), (MISTAKES[3], 2)])
    assert d.names() == [f"partly {MISTAKES[0].label} (4 of 10 tensors)", f"partly {MISTAKES[3].label} (2 of 10 tensors)"]


def _summed_then_raises(net, cache, y, loss_fn):
    """The output delta summed over the samples, (1, n_L); its dE/dW product raises where B > 1."""
    x, L = cache.activations, net.num_layers
    delta = students._output_delta(net, cache, y, loss_fn).sum(0, keepdim=True)  # the sum: the slip
    grad_w, grad_b = [None] * L, [None] * L
    for k in range(L - 1, -1, -1):
        grad_w[k] = delta.T @ x[k]  # (n, 1) @ (B, n_k): raises where B > 1
        grad_b[k] = delta.sum(0)
        if k > 0:
            delta = (delta @ net.weights[k]) * students.fprime(net.activation_functions[k - 1], x[k])
    return grad_w, grad_b


def test_a_slip_that_makes_a_later_line_raise_is_named_at_its_own_line():
    report = grade(_summed_then_raises, "summed_then_raises", finite_diff=False)
    d = report.diagnosis
    assert [m.label for m in d.explains] == ["the deltas summed over the samples before back-propagating"]
    lines, first = inspect.getsourcelines(_summed_then_raises)
    slip = first + next(i for i, text in enumerate(lines) if "# the sum: the slip" in text)
    assert f"test_grade_diagnosis.py:{slip}: delta = " in d.where[d.explains[0].label], d.where  # not the @ line
    assert report.exit_code == 2
    assert report.text().rstrip().endswith("calls raised the shape error that the mistake named above makes, so they "
                                           "gave nothing to grade")  # not "expected FUNCTION(net, ...) returning"
