#!/usr/bin/env bash
# Create .venv beside this project and install requirements.txt into it.
# Idempotent: a stamp holding the requirements' hash skips the install when nothing changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv"
py="${PYTHON:-python3}"
"$py" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || {
  echo "MedAnomaly Workbench needs Python 3.11 or newer (found: $("$py" --version 2>&1))." >&2
  echo "Install it, or point PYTHON at one: PYTHON=/usr/bin/python3.12 ./run.sh" >&2
  exit 1
}
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
stamp="$venv/.requirements.sha256"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  # A first install is about 7 GB (PyTorch with its CUDA libraries); a disk that fills half way
  # leaves a broken environment and a pip traceback, so say it before starting.
  need_gb=8
  [ -f "$stamp" ] && need_gb=2
  free_gb=$(( $(df -Pk "$venv" | awk 'NR==2 {print $4}') / 1048576 ))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "Setting up needs about $need_gb GB free on the disk of $venv; $free_gb GB is free." >&2
    echo "Free some space there (old workspaces, checkpoints, /tmp/pytest-of-$(id -un)) and run this again." >&2
    exit 1
  fi
  echo "Installing requirements into $venv (first run: a few minutes, PyTorch is large)..." >&2
  "$venv/bin/python" -m pip install --quiet --upgrade pip
  "$venv/bin/python" -m pip install --quiet -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi
