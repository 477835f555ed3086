#!/usr/bin/env bash
# Set up (first run only) and run the whole test suite. Arguments go to pytest.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bash "$root/scripts/setup_env.sh"
bash "$root/scripts/setup_test_services.sh"
bash "$root/scripts/setup_browser.sh"
cd "$root"
exec "$root/.venv/bin/python" -m pytest "$@"
