"""`manual-backprop grade` for a class (issue 21 item 2): several files or a folder, each in its own process with a
timeout, --jobs of them at once, rows in a CSV and a JSON (with the student's line and the factor yours / autograd),
a verdict a submission cannot forge, helper files skipped, Ctrl-C clean."""

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from commands.cli import main

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

SUBMISSIONS = {
    "alice": "from helpers import correct as backward\n",  # imports her own helper file beside it
    "bob": "from helpers import missing_mean as backward\n",
    "carol": "def backward(net, cache, y, loss_fn):\n    while True:\n        pass\n",
    "dave": "import os\n\ndef backward(net, cache, y, loss_fn):\n    print('PASS: every layer agrees')\n"
            "    os._exit(0)\n",
    "erin": "import json\nfrom helpers import correct\n\ndef backward(net, cache, y, loss_fn):\n"
            "    print('x ' + json.dumps({'verdict': 'pass', 'layers_right': 9, 'layers_total': 9}))\n"
            "    w, b = correct(net, cache, y, loss_fn)\n    return [g * 2 for g in w], b\n",
    "frank": "from helpers import correct\n\ndef backward(net, cache, y, loss_fn):\n"
             "    for p in net.biases:\n        p.zero_()\n    return correct(net, cache, y, loss_fn)\n",
    "grace": "from helpers import correct\n\ndef backward(net, cache, y, loss_fn):\n"
             "    loss_fn.reduction = 'sum'\n    return correct(net, cache, y, loss_fn)\n",
}


def make_class(folder: Path, names) -> list:
    folder.mkdir()
    shutil.copyfile(HERE / "student_mistakes.py", folder / "_helpers_src.py")
    (folder / "helpers.py").write_text((folder / "_helpers_src.py").read_text())
    (folder / "_helpers_src.py").unlink()
    for name in names:
        (folder / f"{name}.py").write_text(SUBMISSIONS[name])
    return [folder / f"{name}.py" for name in names]


def rows_of(tmp_path):
    with open(tmp_path / "g.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert [r["student"] for r in json.loads((tmp_path / "g.json").read_text())] == list(rows)
    return rows


def test_a_class_is_graded_one_process_each_and_nothing_is_forged(tmp_path, capsys):
    files = make_class(tmp_path / "class", SUBMISSIONS)
    code = main(["grade", *map(str, files), "--no-fd", "--timeout", "15", "--csv", str(tmp_path / "g.csv"),
                 "--json", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    assert code == 1
    rows = rows_of(tmp_path)
    assert list(rows) == list(SUBMISSIONS)  # in the order of the files, whichever finished first
    assert rows["alice"]["verdict"] == "pass" and rows["alice"]["layers_right"] == rows["alice"]["layers_total"]
    assert rows["bob"]["verdict"] == "fail" and rows["bob"]["mistakes"] == "a missing 1/m"
    assert rows["bob"]["line"].startswith("helpers.py:") and "delta = c * 2 * (x[L] - y) * fp" in rows["bob"]["line"]
    assert rows["bob"]["factors"] == "dW 5; db 5"  # B = 5: five times autograd's
    bob = next(r for r in json.loads((tmp_path / "g.json").read_text()) if r["student"] == "bob")
    assert {(r["B"], r["dW_yours_over_autograd"]) for r in bob["layers"]} == {(1, 1.0), (5, 5.0)}
    assert rows["carol"]["verdict"] == "timeout" and "15 s" in rows["carol"]["problem"]
    assert rows["dave"]["verdict"] == "error" and rows["dave"]["problem"] == (
        "the grading process ended (exit 0) before the grader's final line; the submission's last output: PASS: "
        "every layer agrees")  # what she printed, said to be hers
    assert rows["erin"]["verdict"] == "fail"  # a printed verdict of her own counts for nothing
    assert rows["frank"]["verdict"] == "fail"
    assert rows["frank"]["problem"].startswith("frank.py:backward changed net.biases[0] in place")  # no full path
    # Changing her Loss to 'sum' changes only her own copy (a fresh one per case): autograd keeps the mean,
    # so her answers are wrong in every case instead of agreeing with a grader she bent.
    assert rows["grace"]["verdict"] == "fail" and rows["grace"]["mistakes"] == "a missing 1/m"
    assert all(float(r["seconds"]) > 0 for r in rows.values())
    assert "graded 7 submissions in" in out and "1 pass" in out and "1 timeout" in out


def test_a_folder_is_a_class_and_its_helper_files_are_skipped(tmp_path, capsys):
    make_class(tmp_path / "class", ["alice", "bob"])
    code = main(["grade", str(tmp_path / "class"), "--no-fd", "--loss", "squared_error", "cross_entropy",
                 "--csv", str(tmp_path / "g.csv"), "--json", str(tmp_path / "g.json")])
    out = capsys.readouterr().out
    rows = rows_of(tmp_path)
    assert code == 1 and list(rows) == ["alice", "bob"]  # helpers.py defines no backward: not a submission
    assert rows["alice"]["layers_total"] == "204"  # the flags reach every submission: two losses
    skipped = [line for line in out.splitlines() if line.startswith("skipped ")]
    assert skipped == [f"skipped 1 file with no 'backward' (a helper module?): {tmp_path / 'class' / 'helpers.py'}"]
    assert "graded 2 submissions" in out


def test_a_folder_of_helpers_only_is_one_clear_line(tmp_path, capsys):
    make_class(tmp_path / "class", [])
    code = main(["grade", str(tmp_path / "class"), "--no-fd"])
    err = capsys.readouterr().err
    assert code == 2 and "holds no .py file that defines 'backward' (skipped: helpers.py)" in err
    assert "Traceback" not in err


def _running_here(tmp_path) -> list:
    """Processes working in a folder under tmp_path: the grading processes of this test (each works in its
    submission's folder)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if cwd.startswith(str(tmp_path)):
            found.append(pid)
    return found


def _grading_past_alice(tmp_path, files, jobs: int) -> subprocess.Popen:
    """`manual-backprop grade FILES` started in a process of its own, once it has printed alice's row."""
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "grade", *map(str, files), "--no-fd", "--jobs",
                             str(jobs), "--timeout", "300", "--csv", str(tmp_path / "g.csv"), "--json",
                             str(tmp_path / "g.json")], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline, seen = time.time() + 120, ""
    while "alice" not in seen and time.time() < deadline:
        seen += proc.stdout.readline()
    return proc


@pytest.mark.parametrize("presses", [1, 2], ids=["once", "twice"])
def test_ctrl_c_in_parallel_stops_every_submission(tmp_path, presses):
    """Ctrl-C once or twice (the second while the running submissions are being stopped): the rows so far are
    written, no traceback."""
    SUBMISSIONS["carol2"] = SUBMISSIONS["carol"]
    files = make_class(tmp_path / "class", ["alice", "carol", "carol2"])
    del SUBMISSIONS["carol2"]
    proc = _grading_past_alice(tmp_path, files, jobs=3)
    assert len(_running_here(tmp_path)) == 2  # both endless loops run at once
    for _ in range(presses):
        proc.send_signal(signal.SIGINT)
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "stopped by Ctrl-C after 1 of 3" in out
    assert list(rows_of(tmp_path)) == ["alice"] and _running_here(tmp_path) == []


def test_a_teachers_script_without_a_main_guard_grades_the_class_once(tmp_path):
    """The children never run the caller's main script again (multiprocessing would), nor need it: a script
    file and ``python -`` both work."""
    make_class(tmp_path / "class", ["alice", "bob"])
    script = (f"from commands.grade_class import grade_class\nprint('top level ran')\n"
              f"grade_class([{str(tmp_path / 'class')!r}], 'backward', {{'finite_diff': False}}, timeout=60, "
              f"csv_path={str(tmp_path / 'g.csv')!r}, json_path={str(tmp_path / 'g.json')!r}, jobs=2)\n")
    (tmp_path / "grade_all.py").write_text(script)
    for argv, stdin in (([str(tmp_path / "grade_all.py")], None), (["-"], script)):
        done = subprocess.run([sys.executable, *argv], input=stdin, cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert done.stdout.count("top level ran") == 1, done.stdout + done.stderr
        rows = rows_of(tmp_path)
        assert rows["alice"]["verdict"] == "pass" and rows["bob"]["verdict"] == "fail", rows


def test_a_bad_jobs_flag_is_one_line(tmp_path, capsys):
    files = make_class(tmp_path / "class", ["alice", "bob"])
    code = main(["grade", *map(str, files), "--jobs", "0"])
    assert code == 2 and "--jobs must be at least 1" in capsys.readouterr().err
    for timeout in ("inf", "1e300", "nan", "0"):  # inf overflowed the processes' wait (a traceback)
        assert main(["grade", *map(str, files), "--timeout", timeout]) == 2
        assert "--timeout must be a number of seconds in (0, 1e+06]" in capsys.readouterr().err
    for flag, value, message in (("--jobs", "-1", "--jobs must be at least 1"),  # one file: the same checks
                                 ("--timeout", "nan", "--timeout must be a number"),
                                 ("--fd-samples", "-3", "--fd-samples must be 0")):
        assert main(["grade", str(files[0]), flag, value]) == 2
        assert message in capsys.readouterr().err


def test_ctrl_c_writes_the_rows_so_far_and_exits_130(tmp_path):
    files = make_class(tmp_path / "class", ["alice", "carol", "bob"])
    proc = _grading_past_alice(tmp_path, files, jobs=1)
    time.sleep(2)  # carol's endless loop is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "stopped by Ctrl-C after 1 of 3" in out
    assert list(rows_of(tmp_path)) == ["alice"]


def test_one_submission_imports_its_own_helper_file_as_python_would(tmp_path):
    """`manual-backprop grade alice.py`, where alice.py imports helpers.py beside it, works from her folder and from
    elsewhere, as `python alice.py` would (it said "No module named 'helpers'")."""
    make_class(tmp_path / "class", ["alice"])
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for cwd, target in ((tmp_path / "class", "alice.py"), (tmp_path, "class/alice.py")):
        done = subprocess.run([sys.executable, "-m", "commands.cli", "grade", target, "--no-fd"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PASS" in done.stdout and "No module named" not in done.stdout + done.stderr


def test_a_progress_line_cuts_long_text_at_a_word_and_shows_no_layers_for_a_file_that_never_ran():
    from commands.grade_class import progress_line

    code = "delta = (delta @ net.weights[k].T) * derivative(net.activation_functions[k - 1], x[k])"
    row = {"student": "erin", "verdict": "fail", "layers_right": 17, "layers_total": 102,
           "mistakes": "W where W^T belongs in the hidden delta", "line": f"erin.py:68 in backward: {code}",
           "problem": "", "seconds": 0.43}
    shown = progress_line(row, 5, 30)
    assert shown.startswith("[5/30] erin: fail 17/102 layers, W where W^T belongs in the hidden delta at erin.py:68 ")
    cut = shown.split(" at ", 1)[1].rsplit(" ..., 0.4 s", 1)
    assert len(cut) == 2 and row["line"].startswith(cut[0] + " "), shown  # cut between words, marked
    never_ran = {**row, "verdict": "unusable", "layers_right": 0, "layers_total": 0, "mistakes": "", "line": "",
                 "problem": "cannot load zelda.py: SyntaxError: Non-UTF-8 code", "seconds": 0.01}
    assert progress_line(never_ran, 1, 1) == "[1/1] erin: unusable (cannot load zelda.py: SyntaxError: Non-UTF-8 code), 0.0 s"
