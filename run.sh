#!/usr/bin/env bash
# Set up (first run only) and start MedAnomaly Workbench. Arguments go to main.py.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
exec "$root/.venv/bin/python" "$root/main.py" "$@"
