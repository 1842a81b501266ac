#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install medvlm with every extra.
#
# torch goes in first: on a machine without an NVIDIA GPU that is the CPU build torch==2.13.0
# (a plain `pip install torch` would pull several GB of CUDA packages); every later install is
# constrained to the torch that is installed, so nothing replaces it. Re-running is instant when
# pyproject.toml has not changed.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${MEDVLM_VENV:-$root/.venv}
python_bin=${PYTHON:-python3}

if [[ ! -x "$venv/bin/python" ]]; then
  echo "bootstrap: creating virtual environment $venv" >&2
  "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"

stamp="$venv/.medvlm-installed"
want="$(sha256sum "$root/pyproject.toml" | cut -c1-16)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]] && python -c "import medvlm" 2>/dev/null; then
  exit 0
fi

echo "bootstrap: installing dependencies (about a minute)" >&2
python -m pip install --quiet --upgrade pip 2>/dev/null
if ! python -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then
    python -m pip install --quiet torch
  else
    python -m pip install --quiet "torch==${MEDVLM_CPU_TORCH:-2.13.0}"
  fi
fi
python -c "import torch; print('torch==' + torch.__version__.split('+')[0])" > "$venv/constraints.txt"
python -m pip install --quiet -c "$venv/constraints.txt" -e "$root[all]"
echo "$want" > "$stamp"
