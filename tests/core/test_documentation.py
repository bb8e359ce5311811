"""Every documented snippet runs as written: the fenced blocks of README.md and docs/*.md.

- A ```python block runs in a fresh namespace, in a temporary working directory, seeded. A block whose first line
  is ``# continues the previous block`` runs after the python block before it (in the same file), in one
  namespace: the chain is one test, named after its first block. A first line that is a comment may mark the chain:
  ``needs CUDA`` skips it without CUDA, ``needs mnist1d`` (any module name) without that optional package, and a
  first line starting ``# slow`` puts it in the slow suite (``python -m pytest -m slow``):
  ``# slow, needs mnist1d: about 25 s``.
- A ```bash / ```sh / ```console block: for every ``python -m MODULE ...`` and ``manual-backprop COMMAND ...``
  command in it, MODULE imports and every ``--flag`` of the command appears in its ``--help``. A line whose
  comment says ``# needs CUDA`` or ``# needs torchrun`` is skipped with that reason (``torchrun ... -m MODULE`` is
  always a torchrun line).
- The README's two quick-start commands are the ones .ci/run runs, and every relative link points at a file.

Each test is named ``<file>:<line>`` of its block, so a failure points at the snippet to fix.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import random
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CONTINUES = "# continues the previous block"
NEEDS = re.compile(r"#\s*needs (CUDA|torchrun)\b")
SHELL_LANGS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```\s*([\w+-]*)\s*$")


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


@dataclass
class Block:
    path: Path
    line: int      # 1-based line of the block's first content line
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{_name(self.path)}:{self.line}"


def fenced_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a markdown file (top-level fences only), with the line each starts on."""
    blocks, lang, start, body = [], None, 0, []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body = match.group(1).lower(), number + 1, []
        elif lang is not None and line.strip() == "```":
            blocks.append(Block(path, start, lang, "\n".join(body) + "\n"))
            lang = None
        elif lang is not None:
            body.append(line)
    assert lang is None, f"{_name(path)}:{start}: a ``` fence is never closed"
    return blocks


def python_chains(paths=DOC_FILES) -> list[list[Block]]:
    """The python blocks of every file, a block that continues the previous one joined to its chain."""
    chains = []
    for path in paths:
        previous = None
        for block in fenced_blocks(path):
            if block.lang != "python":
                continue
            if block.text.lstrip().startswith(CONTINUES):
                assert previous is not None, f"{block.where}: says it continues a block, but none comes before it"
                previous.append(block)
            else:
                previous = [block]
                chains.append(previous)
    return chains


@dataclass
class Command:
    block: Block
    line: int
    argv: list            # ["python", "-m", MODULE, ...] or ["manual-backprop", COMMAND, ...]
    skip: str | None      # why it is not checked here
    problem: str | None = None

    @property
    def where(self) -> str:
        return f"{_name(self.block.path)}:{self.line}"


def shell_commands(paths=DOC_FILES) -> list[Command]:
    """Every `python -m` and `manual-backprop` command in the shell blocks, continuation lines joined."""
    commands = []
    for path in paths:
        for block in fenced_blocks(path):
            if block.lang not in SHELL_LANGS:
                continue
            logical, first = "", None
            for offset, raw in enumerate(block.text.splitlines()):
                line = raw[2:] if block.lang == "console" and raw.startswith("$ ") else raw
                if first is None:
                    first = block.line + offset
                if line.rstrip().endswith("\\"):
                    logical += line.rstrip()[:-1] + " "
                    continue
                logical += line
                commands.extend(_commands_in(block, first, logical))
                logical, first = "", None
    return commands


def _commands_in(block: Block, line: int, text: str) -> list[Command]:
    need = NEEDS.search(text)
    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as err:
        raise AssertionError(f"{_name(block.path)}:{line}: cannot split {text!r}: {err}")
    segments, current = [], []
    for token in tokens:
        if token in {"&&", "||", ";", "|"}:
            segments.append(current)
            current = []
        else:
            current.append(token)
    segments.append(current)
    commands = []
    for argv in segments:
        for i, token in enumerate(argv):       # a redirection ends the command's own arguments
            if token in {">", ">>", "<", "2>", "2>&1"}:
                argv = argv[:i]
                break
        while argv and re.match(r"^[A-Za-z_]\w*=", argv[0]):    # VAR=value before the command
            argv = argv[1:]
        if not argv:
            continue
        problem = None
        if argv[0] == "torchrun":
            if not (need and need.group(1) == "torchrun"):
                problem = "a torchrun command must end in the comment `# needs torchrun`"
            if "-m" not in argv:
                continue
            argv = ["python"] + argv[argv.index("-m"):]
        module = argv[0] in {"python", "python3"} and argv[1:2] == ["-m"] and len(argv) > 2 and argv[2] != "pytest"
        command = argv[0] == "manual-backprop" and len(argv) > 1 and not argv[1].startswith("-")
        if not (module or command):
            continue
        skip = f"needs {need.group(1)}" if need and not problem else None
        commands.append(Command(block, line, argv, skip, problem))
    return commands


_HELP: dict = {}


def help_text(argv: list) -> str:
    """`--help` of a `python -m MODULE` or `manual-backprop COMMAND`, printed by its main() in this process."""
    if argv[0] == "manual-backprop":
        module, args = "commands.cli", [argv[1], "--help"]
    else:
        module, args = argv[2], ["--help"]
    key = (module, tuple(args))
    if key not in _HELP:
        mod = importlib.import_module(module)
        if not hasattr(mod, "main") and hasattr(mod, "__path__"):
            mod = importlib.import_module(module + ".__main__")
        assert hasattr(mod, "main"), f"{module} has no main(argv)"
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            try:
                mod.main(args)
            except SystemExit:
                pass
        _HELP[key] = out.getvalue()
    return _HELP[key]


def _chain_id(chain):
    return chain[0].where


def _chain_param(chain):
    slow = chain[0].text.lstrip().startswith("# slow")
    return pytest.param(chain, id=_chain_id(chain), marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("chain", [_chain_param(c) for c in python_chains()])
def test_python_block_runs_as_written(chain, tmp_path, monkeypatch):
    first = chain[0].text.lstrip().splitlines()[0]
    for need in re.findall(r"needs ([\w.]+)", first) if first.startswith("#") else []:
        if need == "CUDA":
            if not torch.cuda.is_available():
                pytest.skip("needs CUDA")
        else:
            pytest.importorskip(need, reason=f"{chain[0].where} needs {need}")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)
    namespace = {"__name__": "__doc_snippet__"}
    dtype = torch.get_default_dtype()
    try:
        for block in chain:
            # Padded so that a traceback names the markdown file and the line of the failing statement.
            code = compile("\n" * (block.line - 1) + block.text, str(block.path), "exec")
            with contextlib.redirect_stdout(io.StringIO()):
                exec(code, namespace)  # noqa: S102 - running the documented snippet is the test
    finally:
        torch.set_default_dtype(dtype)


@pytest.mark.parametrize("command", shell_commands(), ids=lambda c: c.where)
def test_shell_command_names_real_flags(command):
    assert not command.problem, f"{command.where}: {command.problem}"
    if command.skip:
        pytest.skip(f"{command.where}: {command.skip}")
    text = help_text(command.argv)
    assert "usage:" in text, f"{command.where}: `{' '.join(command.argv[:3])} --help` printed no usage"
    for token in command.argv[2:]:
        flag = token.split("=", 1)[0]
        if flag.startswith("--") and len(flag) > 2:
            assert re.search(re.escape(flag) + r"(?![\w-])", text), (
                f"{command.where}: {flag} is not a flag of `{' '.join(command.argv[:3])}` (not in its --help)")


def test_every_doc_has_blocks_that_the_tests_find():
    # A guard on the extraction itself: the README shows both kinds, so finding none means the parser broke.
    assert any(c[0].path.name == "README.md" for c in python_chains())
    assert any(c.block.path.name == "README.md" for c in shell_commands())


def test_quick_start_commands_are_what_ci_runs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "bash install.sh datasets && python -m experiments.learning_modes" in readme
    assert "bash install.sh test && python -m pytest" in readme
    assert "bash install.sh test" in ci and "python -m pytest" in ci, ".ci/run no longer runs the README's test command"


LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_files(path):
    missing = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        for target in LINK.findall(line):
            local = "://" not in target and not target.startswith("mailto:")
            if local and not (path.parent / target).exists():
                missing.append(f"{path.relative_to(ROOT)}:{number}: {target}")
    assert not missing, "links to files that do not exist:\n" + "\n".join(missing)


SAMPLE = """# sample
```python
a = 1
```
```python
# continues the previous block
b = a + 1
```
```bash
python -m experiments.xor --seeds 2 \\
    --hidden 2 && manual-backprop trace --example mazur > out.md
torchrun --nproc_per_node=2 -m experiments.sweep --distributed   # needs torchrun
PYTHONPATH=. python3 -m benchmarks.gpu_check --out gpu_check   # needs CUDA
torchrun -m experiments.sweep
```
```python
c = 3
```
"""


def test_the_extraction_chains_blocks_and_reads_commands(tmp_path):
    # The parser itself: a continuation joins its chain; continued shell lines join; redirections end a command;
    # torchrun lines are read as their module, skipped when marked, and a problem when not.
    doc = tmp_path / "sample.md"
    doc.write_text(SAMPLE)
    chains = python_chains([doc])
    assert [[b.line for b in chain] for chain in chains] == [[3, 6], [17]]
    commands = shell_commands([doc])
    assert [(c.line, c.argv, c.skip, bool(c.problem)) for c in commands] == [
        (10, ["python", "-m", "experiments.xor", "--seeds", "2", "--hidden", "2"], None, False),
        (10, ["manual-backprop", "trace", "--example", "mazur"], None, False),
        (12, ["python", "-m", "experiments.sweep", "--distributed"], "needs torchrun", False),
        (13, ["python3", "-m", "benchmarks.gpu_check", "--out", "gpu_check"], "needs CUDA", False),
        (14, ["python", "-m", "experiments.sweep"], None, True),
    ]


NAMED_FILE = re.compile(r"(?<![\w/.])((?:manual_backprop|reference|commands|experiments|benchmarks|tests|examples|"
                        r"scripts)/[\w/]+\.(?:py|c|h))\b")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_files_the_docs_name_exist(path):
    # A page that names tests/proof/test_x.py or manual_backprop/fast/y.py sends a reader there: it must exist.
    missing = [f"{path.relative_to(ROOT)}:{number}: {name}"
               for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
               for name in NAMED_FILE.findall(line) if not (ROOT / name).exists()]
    assert not missing, "files named that do not exist:\n" + "\n".join(missing)
