#!/usr/bin/env bash
# Install the benchmark's peer packages (pty-chi, PtyRAD) WITHOUT touching the project's torch.
#
#   bash bench/install_peers.sh            # separate venv bench/.peers-venv (default)
#   bash bench/install_peers.sh --shared   # into the project venv .venv instead
#
# Separate venv (default): bench/.peers-venv is created with the project venv's interpreter
# and a .pth file that adds the project venv's site-packages behind its own, so the peers
# run on the very same CPU torch (2.13.0), numpy, scipy, pandas, h5py, matplotlib, pydantic
# and ptyflow, while the peers and their few extra dependencies live apart (the folder is
# git-ignored). The benchmark finds it by itself (bench/peers/__init__.py).
#
# Either way the peers are installed with --no-deps and their import-time dependencies are
# listed explicitly: ptychi's and ptyrad's declared dependencies pull torchvision (whose
# unpinned wheel brings a CUDA torch, and whose compiled part does not load beside the CPU
# torch), jupyter, optuna, accelerate and mypy, none of which a reconstruction needs.
# torchvision is replaced at run time by bench/peers/_shim.py (its Gaussian blur in torch);
# ptyrad 1.0.0's Python-3.12-only f-string (ptyrad/plotting/basic.py) is fixed at import.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
[ -x "$VENV/bin/python" ] || { echo "no project venv at $VENV (see README)" >&2; exit 1; }

PEERS=(ptychi==2.2.0 ptyrad==1.0.0)
# Import-time needs of the peers that the project venv does not already have.
EXTRA=(scikit-learn==1.9.1 joblib==1.6.0 threadpoolctl==3.8.0 narwhals==2.29.0 tqdm==4.70.1)

if [ "${1:-}" = "--shared" ]; then
  PY="$VENV/bin/python"
else
  PEERS_VENV="$ROOT/bench/.peers-venv"
  BASE=$("$VENV/bin/python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')
  if [ ! -x "$PEERS_VENV/bin/python" ]; then
    "$BASE" -m venv "$PEERS_VENV"
  fi
  echo '*' > "$PEERS_VENV/.gitignore"
  SHARED=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  OWN=$("$PEERS_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  echo "import site; site.addsitedir('$SHARED')" > "$OWN/_ptyflow_shared_venv.pth"
  PY="$PEERS_VENV/bin/python"
fi

TORCH_BEFORE=$("$PY" -c 'import torch; print(torch.__version__)')
"$PY" -m pip install -q -c constraints.txt --no-deps "${PEERS[@]}" "${EXTRA[@]}"
TORCH_AFTER=$("$PY" -c 'import torch; print(torch.__version__)')
if [ "$TORCH_BEFORE" != "$TORCH_AFTER" ]; then
  echo "torch changed ($TORCH_BEFORE -> $TORCH_AFTER): this must not happen" >&2
  exit 1
fi
echo "peers installed for $PY (torch $TORCH_AFTER):"
PTYFLOW_PEERS_PYTHON="$PY" "$VENV/bin/python" -m bench peers
