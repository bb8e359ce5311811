"""`manual-backprop grade` for a class (issue 21 item 2): several files or a folder, each in its own process with a
timeout, rows in a CSV and a JSON, a verdict a submission cannot forge, Ctrl-C clean."""

import csv
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    assert rows["alice"]["verdict"] == "pass" and rows["alice"]["layers_right"] == rows["alice"]["layers_total"]
    assert rows["bob"]["verdict"] == "fail" and rows["bob"]["mistakes"] == "a missing 1/m"
    assert rows["carol"]["verdict"] == "timeout" and "15 s" in rows["carol"]["problem"]
    assert rows["dave"]["verdict"] == "error" and "before the grader's final line" in rows["dave"]["problem"]
    assert rows["erin"]["verdict"] == "fail"  # a printed verdict of her own counts for nothing
    assert rows["frank"]["verdict"] == "fail" and "changed net.biases[0] in place" in rows["frank"]["problem"]
    # Changing her Loss to 'sum' changes only her own copy (a fresh one per case): autograd keeps the mean,
    # so her answers are wrong in every case instead of agreeing with a grader she bent.
    assert rows["grace"]["verdict"] == "fail" and rows["grace"]["mistakes"] == "a missing 1/m"
    assert all(float(r["seconds"]) > 0 for r in rows.values())
    assert "graded 7 submissions in" in out and "1 pass" in out and "1 timeout" in out


def test_a_folder_is_a_class(tmp_path, capsys):
    make_class(tmp_path / "class", ["alice", "bob"])
    code = main(["grade", str(tmp_path / "class"), "--no-fd", "--csv", str(tmp_path / "g.csv"),
                 "--json", str(tmp_path / "g.json")])
    rows = rows_of(tmp_path)
    assert code == 1 and set(rows) == {"alice", "bob", "helpers"}  # every .py file in it is a submission
    assert rows["helpers"]["verdict"] == "unusable"


def test_ctrl_c_writes_the_rows_so_far_and_exits_130(tmp_path):
    files = make_class(tmp_path / "class", ["alice", "carol", "bob"])
    proc = subprocess.Popen([sys.executable, "-m", "commands.cli", "grade", *map(str, files), "--no-fd",
                             "--timeout", "300", "--csv", str(tmp_path / "g.csv"), "--json", str(tmp_path / "g.json")],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    seen = ""
    while "alice" not in seen and time.time() < deadline:
        seen += proc.stdout.readline()
    time.sleep(2)  # carol's endless loop is running
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err and "stopped by Ctrl-C after 1 of 3" in out
    assert list(rows_of(tmp_path)) == ["alice"]
