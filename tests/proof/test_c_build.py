"""The C kernels' build (manual_backprop/fast/c_loop.py): flags tried in order, each build's flags in its cache key.

The first attempt prefers 512-bit vectors with -march=native; a compiler that refuses it gets -march=native alone,
then neither. A loop's vector width never changes its results (no reassociation), so a library built by a fallback
computes the same bits as the first: here, a compiler that refuses both native attempts still builds the C loop,
and one update through it equals one update through the library built with every flag.
"""

import os
import shutil
import stat
import subprocess
import sys
import textwrap

import pytest

from helpers import c_loop_reason

pytestmark = pytest.mark.skipif(c_loop_reason() is not None, reason=f"no working C compiler: {c_loop_reason()}")

_UPDATE = textwrap.dedent("""
    import torch
    from manual_backprop import MLP
    from manual_backprop.fast import one_update
    net = MLP([90, 9, 3], activation="tanh", output_activation="sigmoid", bias_init="uniform", seed=3)
    x = torch.randn(7, 90, generator=torch.Generator().manual_seed(1))
    y = torch.rand(7, 3, generator=torch.Generator().manual_seed(2))
    loss, grads = net.loss_and_grads(x, y, "squared_error")
    net.step(grads, 0.5)
    assert one_update.plan_of(net).fn is not None, one_update.unavailable
    print(repr([loss.item()] + [v for p in net.parameters() for v in p.flatten().tolist()]))
""")


def _run(env):
    out = subprocess.run([sys.executable, "-c", _UPDATE], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_a_compiler_refusing_the_native_flags_builds_the_same_bits(tmp_path):
    cc = shutil.which(os.environ.get("CC", "")) or shutil.which("gcc") or shutil.which("cc")
    wrapper = tmp_path / "picky-cc"
    wrapper.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        case "$*" in *--version*) exec {cc} "$@";; esac
        for a in "$@"; do case "$a" in -march=*|-mprefer-vector-width=*) echo refused >> {tmp_path}/log; exit 1;; esac; done
        echo built >> {tmp_path}/log
        exec {cc} "$@"
        """))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    base = {k: v for k, v in os.environ.items() if k not in ("MANUAL_BACKPROP_CC", "CC", "MANUAL_BACKPROP_PURE")}
    picky = tmp_path / "picky-cache"
    full = tmp_path / "full-cache"
    for folder in (picky, full):
        folder.mkdir(mode=0o700)
    plain = _run({**base, "MANUAL_BACKPROP_CACHE": str(picky), "MANUAL_BACKPROP_CC": str(wrapper)})
    native = _run({**base, "MANUAL_BACKPROP_CACHE": str(full), "MANUAL_BACKPROP_CC": cc})
    assert plain == native, "the fallback build's update differs from the native build's"
    assert (tmp_path / "log").read_text().split()[:3] == ["refused", "refused", "built"], \
        "the C loop was not built by the third attempt (no -march, no vector-width preference)"
