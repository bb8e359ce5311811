#!/usr/bin/env bash
# Install manual-backprop into the current Python environment.
#   bash install.sh            the library, reference twin and experiments
#   bash install.sh datasets   ... plus scikit-learn digits and MNIST-1D
#   bash install.sh test       ... plus pytest and hypothesis (and the dataset packages the tests use)
# Where no torch is installed yet, torch 2.13.0 is installed first: on a machine without a working GPU
# (nvidia-smi absent or failing) the CPU build, from PyTorch's CPU wheel index, so pip does not pull the CUDA build
# and its nvidia packages (several GB); with a GPU, the default build. If the CPU index cannot be reached (no
# internet, a proxy, a local mirror only), the plain install from pip's configured index follows at once: one
# attempt with a 5 s timeout, no retries. A torch that is already there (a GPU user's CUDA build, say) is kept.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
TORCH="torch==2.13.0"
CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
        "$PY" -m pip install --quiet "$TORCH"
    elif ! "$PY" -m pip install --quiet --timeout 5 --retries 0 --index-url "$CPU_INDEX" "$TORCH"; then
        echo "install.sh: PyTorch's CPU wheel index ($CPU_INDEX) cannot be reached; installing $TORCH from" \
             "pip's configured index instead" >&2
        "$PY" -m pip install --quiet "$TORCH"
    fi
fi
extras=${1:-}
if [ -n "$extras" ]; then
    "$PY" -m pip install --quiet -e ".[$extras]"
else
    "$PY" -m pip install --quiet -e .
fi
"$PY" -c "import torch, manual_backprop; print(f'manual_backprop ready: torch {torch.__version__}')"
