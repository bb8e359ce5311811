#!/usr/bin/env bash
# Install manual-backprop into the current Python environment.
#   bash install.sh            the library, reference twin and experiments
#   bash install.sh datasets   ... plus scikit-learn digits and MNIST-1D
#   bash install.sh test       ... plus pytest and hypothesis (and the dataset packages the tests use)
# Where no torch is installed yet, the CPU build of torch 2.13.0 is installed first, so pip does not pull a CUDA
# build of several GB. A torch that is already there (a GPU user's CUDA build, say) is left as it is.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
    "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=${1:-}
if [ -n "$extras" ]; then
    "$PY" -m pip install --quiet -e ".[$extras]"
else
    "$PY" -m pip install --quiet -e .
fi
"$PY" -c "import torch, manual_backprop; print(f'manual_backprop ready: torch {torch.__version__}')"
